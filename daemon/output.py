"""Per-process stdout/stderr files under ``<state dir>/output/<id>/``.

Children write straight into these files (never into pipes held by the daemon),
so their output survives a daemon crash and a child never blocks on a daemon
that is busy or gone. Files stay until the record is deleted.

Capture is bounded: when a stream holds more than its cap, :meth:`enforce_cap`
frees the oldest bytes by punching a hole at the head of the file
(``fallocate(PUNCH_HOLE)``). The disk space is returned, the child's appends go
on undisturbed, and offsets keep their meaning: byte N is always byte N of
what the child wrote. Reads never return bytes below the dropped mark.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

STREAMS = ("stdout", "stderr")
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096
_libc = ctypes.CDLL(None, use_errno=True)


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

    def read(self, process_id: int, stream: str, offset: int = 0, limit: int | None = None,
             dropped: int = 0) -> tuple[int, bytes]:
        """(start, data): bytes from ``max(offset, dropped)``, at most ``limit`` of them."""
        start = max(offset, dropped)
        try:
            with self.path(process_id, stream).open("rb") as handle:
                handle.seek(start)
                return start, handle.read() if limit is None else handle.read(limit)
        except FileNotFoundError:
            return start, b""

    def size(self, process_id: int, stream: str) -> int:
        try:
            return self.path(process_id, stream).stat().st_size
        except FileNotFoundError:
            return 0

    def enforce_cap(self, process_id: int, stream: str, cap: int, dropped: int) -> int:
        """Free the oldest bytes of a stream past ``cap``; returns the new dropped mark.

        Keeps at least ``cap // 2`` of the newest bytes (block aligned), so a
        stream is not trimmed again on every check.
        """
        size = self.size(process_id, stream)
        if size - dropped <= cap:
            return dropped
        mark = max(dropped, (size - cap // 2) // _BLOCK * _BLOCK)
        if mark <= dropped:
            return dropped
        try:
            fd = os.open(self.path(process_id, stream), os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return dropped
        try:
            if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                               ctypes.c_long(0), ctypes.c_long(mark)) != 0:
                return dropped  # the filesystem cannot punch holes: keep everything
        finally:
            os.close(fd)
        return mark

    def remove(self, process_id: int) -> None:
        shutil.rmtree(self.directory(process_id), ignore_errors=True)
