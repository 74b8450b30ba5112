"""Reading output files: :class:`OutputReader`, in bounded chunks off the event loop.

:mod:`daemon.output` (whose :class:`~daemon.output.OutputStore` hands out readers
and re-exports the names here) and this module are the only places that read
output files. The HTTP routes read through :class:`OutputReader`: chunks of at
most READ_CHUNK bytes, each read on one of the store's reader threads, so no
output, however large, is ever whole in memory, and no read blocks the event
loop. Reads never return bytes below a stream's dropped mark (see the output cap
in :mod:`daemon.output`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .errors import StablehandError

if TYPE_CHECKING:
    from .output import OutputStore

READ_CHUNK = 256 * 1024   # bytes per read: the most one reader holds in memory at a time


class OutputOverrun(StablehandError):
    """Bytes a reader was streaming were dropped (the output cap) before it could read them."""


class OutputReader:
    """One stream of one process, read in chunks of at most READ_CHUNK bytes on the
    store's reader threads.

    This is how every HTTP route reads output: a 60 MB stream is never in memory
    at once (each reader holds one chunk), and no read, however slow the disk,
    runs on the event loop. Each read opens the file afresh (a few microseconds
    next to the read itself), so a file that does not exist yet simply reads as
    empty, and a reader holds no descriptor between reads.
    """

    def __init__(self, store: OutputStore, path: str, dropped: Callable[[], int]) -> None:
        self._store = store
        self._path = path
        self.dropped = dropped

    async def size(self) -> int:
        """The file's size now (bytes written so far, dropped ones included)."""
        return await self._store._in_thread(_file_size, self._path)

    async def read(self, offset: int, limit: int = READ_CHUNK) -> tuple[int, bytes]:
        """(start, data): at most ``min(limit, READ_CHUNK)`` bytes from ``max(offset, dropped)``."""
        start = max(offset, self.dropped())
        return start, await self._store._in_thread(_pread, self._path, start, min(limit, READ_CHUNK))

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Exactly the bytes ``[start, end)`` (from a :meth:`size` snapshot), chunk by chunk.

        Raises :class:`OutputOverrun` if some of them were dropped before they
        were read: the caller has promised those bytes (Content-Length,
        X-Output-Next) and must not send zeros from a punched hole instead.
        """
        position = start
        while position < end:
            want = min(READ_CHUNK, end - position)
            got, data = await self.read(position, want)
            # The mark is looked at again after the read: bytes are punched only after
            # the mark has moved past them, so a mark still <= position means the
            # bytes read were the real ones.
            if got != position or len(data) != want or self.dropped() > position:
                raise OutputOverrun(f"bytes from {position} were dropped while being read")
            position += want
            yield data


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _pread(path: str, offset: int, limit: int) -> bytes:
    """At most ``limit`` bytes at ``offset``; nothing past the end (clients choose the offset,
    up to 2**63 - 1, which pread would refuse past the filesystem's largest file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        available = os.fstat(fd).st_size - offset
        if available <= 0 or limit <= 0:
            return b""
        return os.pread(fd, min(limit, available), offset)
    finally:
        os.close(fd)
