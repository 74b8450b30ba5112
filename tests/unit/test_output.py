"""The output store on a real directory: flat layout, the old layout moved, removal."""

from __future__ import annotations

from pathlib import Path

from daemon.output import OutputStore


def _files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


def _captured(store: OutputStore, process_id: int, stream: str) -> bytes:
    """What the store holds for a process's stream (nothing if it has no file)."""
    try:
        return Path(store.path(process_id, stream)).read_bytes()
    except FileNotFoundError:
        return b""


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


def test_spares_of_an_older_version_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "output"
    (root / ".spare" / "batch").mkdir(parents=True)
    (root / ".spare" / "batch" / "0").write_bytes(b"")
    OutputStore(root)
    assert not (root / ".spare").exists()


def test_remove_takes_both_streams_and_their_indexes(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output")
    names = ["4.stdout", "4.stderr", "4.stdout.idx", "4.stderr.idx", "44.stdout"]
    for name in names:
        (tmp_path / "output" / name).write_bytes(b"x")
    store.remove(4)
    assert _files(tmp_path / "output") == {"44.stdout"}
