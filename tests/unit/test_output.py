"""The output store on a real directory: flat layout, spare files, the old layout moved."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.output import OutputStore
from tests.helpers import spare_files


def _files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


def test_prepare_renames_spares_and_creates_nothing_on_the_caller(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output", spares=4)
    assert store.make_spares() == 4
    stdout, stderr = store.prepare(7)
    assert (stdout, stderr) == (str(tmp_path / "output" / "7.stdout"), str(tmp_path / "output" / "7.stderr"))
    assert os.path.getsize(stdout) == 0 and os.path.getsize(stderr) == 0
    assert spare_files(tmp_path / "output") == 2 * 3
    assert oct(os.stat(stdout).st_mode & 0o777) == "0o600"


def test_without_spares_prepare_only_names_the_files(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output", spares=2)
    store.make_spares()
    store.prepare(1)
    store.prepare(2)
    assert store.needs_spares()
    assert store.prepare(3) == (str(tmp_path / "output" / "3.stdout"), str(tmp_path / "output" / "3.stderr"))
    assert not os.path.exists(tmp_path / "output" / "3.stdout")  # the spawn creates it
    assert _files(tmp_path / "output") == {"1.stdout", "1.stderr", "2.stdout", "2.stderr"}


def test_spares_left_by_a_crash_are_reused_and_junk_is_removed(tmp_path: Path) -> None:
    OutputStore(tmp_path / "output", spares=3).make_spares()
    [batch] = (tmp_path / "output" / ".spare").iterdir()
    (batch / "odd.stdout").write_text("")                 # half a pair
    (batch / "used.stdout").write_text("x")               # not empty: not a spare
    (batch / "used.stderr").write_text("")
    (tmp_path / "output" / ".spare" / "stray").write_text("")
    store = OutputStore(tmp_path / "output", spares=3)
    assert store.make_spares() == 0  # the three pairs were adopted
    assert spare_files(tmp_path / "output") == 6
    assert sorted(p.name for p in (tmp_path / "output" / ".spare").iterdir()) == [batch.name]


def test_drained_spare_directories_are_removed(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output", spares=2)
    store.make_spares()
    store.prepare(1)
    store.prepare(2)
    store.make_spares()
    assert len(list((tmp_path / "output" / ".spare").iterdir())) == 1


def test_old_per_process_directories_are_moved_to_the_flat_layout(tmp_path: Path) -> None:
    root = tmp_path / "output"
    (root / "12").mkdir(parents=True)
    (root / "12" / "stdout").write_bytes(b"hello\n")
    (root / "12" / "stderr").write_bytes(b"oops\n")
    (root / "13").mkdir()
    (root / "13" / "stdout").write_bytes(b"only out\n")
    store = OutputStore(root)
    assert store.read(12, "stdout") == (0, b"hello\n")
    assert store.read(12, "stderr") == (0, b"oops\n")
    assert store.read(13, "stdout") == (0, b"only out\n")
    assert store.read(13, "stderr") == (0, b"")
    assert not (root / "12").exists() and not (root / "13").exists()
    store.remove(12)
    assert store.read(12, "stdout") == (0, b"")


def test_the_old_layout_is_looked_for_once(tmp_path: Path) -> None:
    root = tmp_path / "output"
    OutputStore(root)
    (root / "5").mkdir()  # appears later: not the store's (it never makes directories now)
    (root / "5" / "stdout").write_bytes(b"x")
    OutputStore(root)
    assert (root / "5" / "stdout").exists()


def test_a_restarted_store_tops_up_what_it_adopted(tmp_path: Path) -> None:
    first = OutputStore(tmp_path / "output", spares=3)
    first.make_spares()
    first.prepare(1)
    second = OutputStore(tmp_path / "output", spares=3)
    assert second.make_spares() == 1
    assert spare_files(tmp_path / "output") == 2 * 3
    assert {second.prepare(n)[0] for n in (2, 3, 4)} == {str(tmp_path / "output" / f"{n}.stdout")
                                                        for n in (2, 3, 4)}
    assert spare_files(tmp_path / "output") == 0
