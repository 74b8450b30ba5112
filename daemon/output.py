"""Per-process stdout/stderr files under ``<state dir>/output/<id>/``.

Children write straight into these files (never into pipes held by the daemon),
so their output survives a daemon crash and a child never blocks on a daemon
that is busy or gone. Files stay until the record is deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

STREAMS = ("stdout", "stderr")


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, process_id: int) -> Path:
        return self.root / str(process_id)

    def path(self, process_id: int, stream: str) -> Path:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return self.directory(process_id) / stream

    def prepare(self, process_id: int) -> tuple[Path, Path]:
        """Create the process's directory; return (stdout path, stderr path)."""
        directory = self.directory(process_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return directory / "stdout", directory / "stderr"

    def read(self, process_id: int, stream: str, offset: int = 0, limit: int | None = None) -> bytes:
        """Bytes ``offset``..``offset+limit`` of a stream; empty if nothing was written."""
        try:
            with self.path(process_id, stream).open("rb") as handle:
                handle.seek(offset)
                return handle.read() if limit is None else handle.read(limit)
        except FileNotFoundError:
            return b""

    def size(self, process_id: int, stream: str) -> int:
        try:
            return self.path(process_id, stream).stat().st_size
        except FileNotFoundError:
            return 0

    def remove(self, process_id: int) -> None:
        shutil.rmtree(self.directory(process_id), ignore_errors=True)
