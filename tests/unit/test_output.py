"""The output store on a real directory: flat layout, spare files, the old layout moved."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from daemon.output import OutputStore
from tests.helpers import spare_files


def _files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


def _captured(store: OutputStore, process_id: int, stream: str) -> bytes:
    """What the store holds for a process's stream (nothing if it has no file)."""
    try:
        return Path(store.path(process_id, stream)).read_bytes()
    except FileNotFoundError:
        return b""


def test_prepare_renames_spares_and_creates_nothing_on_the_caller(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output", spares=4)
    assert store.make_spares() == 8  # files: two per pair
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
    (batch / "odd.stdout").write_text("")                 # one too many
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
    assert _captured(store, 12, "stdout") == b"hello\n"
    assert _captured(store, 12, "stderr") == b"oops\n"
    assert _captured(store, 13, "stdout") == b"only out\n"
    assert _captured(store, 13, "stderr") == b""
    assert not (root / "12").exists() and not (root / "13").exists()
    store.remove(12)
    assert _captured(store, 12, "stdout") == b""


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
    assert second.make_spares() == 2
    assert spare_files(tmp_path / "output") == 2 * 3
    assert {second.prepare(n)[0] for n in (2, 3, 4)} == {str(tmp_path / "output" / f"{n}.stdout")
                                                        for n in (2, 3, 4)}
    assert spare_files(tmp_path / "output") == 0


def _finished_output(store: OutputStore, process_id: int, stdout: bytes = b"") -> tuple[int, int]:
    """Files of a process that ran and ended (their inode numbers)."""
    out, err = store.prepare(process_id)
    with open(out, "ab") as handle:
        handle.write(stdout)
    open(err, "ab").close()
    store.finished(process_id)
    return os.stat(out).st_ino, os.stat(err).st_ino


def test_a_start_without_spares_reuses_empty_files_of_finished_processes(tmp_path: Path) -> None:
    root = tmp_path / "output"
    store = OutputStore(root, spares=0)
    first = _finished_output(store, 1)                    # nothing to reuse: created
    second = _finished_output(store, 2, stdout=b"kept\n")  # takes 1's two empty files
    assert set(second) == set(first)
    assert _files(root) == {"2.stdout", "2.stderr"}
    assert _captured(store, 1, "stdout") == b"" and _captured(store, 1, "stderr") == b""
    out, err = store.prepare(3)       # 2's stderr is empty and reused; its stdout is not
    assert os.stat(out).st_ino == second[1] and not os.path.exists(err)
    assert _files(root) == {"2.stdout", "3.stdout"}
    assert _captured(store, 2, "stdout") == b"kept\n"


def test_output_some_process_still_holds_is_not_reused(tmp_path: Path) -> None:
    root = tmp_path / "output"
    store = OutputStore(root, spares=0)
    out, err = store.prepare(1)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    open(err, "ab").close()
    straggler = subprocess.Popen(["sleep", "30"], stdout=fd)
    os.close(fd)
    store.finished(1)
    try:
        store.prepare(2)
        assert _files(root) == {"1.stdout", "2.stdout"}   # 1's stderr reused, its stdout held
        assert not os.path.exists(root / "2.stderr")       # nothing left to reuse: the spawn creates it
    finally:
        straggler.kill()
        straggler.wait()


def test_spares_come_before_finished_files(tmp_path: Path) -> None:
    root = tmp_path / "output"
    store = OutputStore(root, spares=1)
    _finished_output(store, 1)       # took the first spare pair
    store.make_spares()
    store.prepare(2)
    assert _files(root) == {"1.stdout", "1.stderr", "2.stdout", "2.stderr"}
