"""Reading output files: :class:`OutputReader`, in bounded chunks off the event loop.

:mod:`daemon.output` (whose :class:`~daemon.output.OutputStore` hands out readers
and re-exports the names here) and this module are the only places that read
output files. The HTTP routes read through :class:`OutputReader`: chunks of at
most READ_CHUNK bytes, each read on one of the store's reader threads, so no
output, however large, is ever whole in memory, and no read blocks the event
loop. Reads never return bytes the output cap dropped (see :mod:`daemon.output`):
the first byte a file still holds is found in the file itself, with
``lseek(SEEK_DATA)``, at each read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
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

    def __init__(self, store: OutputStore, path: str) -> None:
        self._store = store
        self._path = path

    async def size(self) -> int:
        """The file's size now (bytes written so far, dropped ones included)."""
        return await self._store._in_thread(_file_size, self._path)

    async def dropped(self) -> int:
        """The offset of the first byte the file still holds (bytes below it were dropped)."""
        return await self._store._in_thread(_first_kept, self._path)

    async def read(self, offset: int, limit: int = READ_CHUNK) -> tuple[int, bytes]:
        """(start, data): at most ``min(limit, READ_CHUNK)`` bytes from ``offset``, or from
        the first byte still kept if that is later."""
        return await self._store._in_thread(_pread, self._path, offset, min(limit, READ_CHUNK))

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
            if got != position or len(data) != want:
                raise OutputOverrun(f"bytes from {position} were dropped while being read")
            position += want
            yield data


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _first_kept(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return _data_start(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _data_start(fd: int, offset: int, size: int) -> int:
    """The first offset >= ``offset`` that holds data (the keeper punches the dropped head).

    ``size`` is the file's size as the caller read it: when all from ``offset`` on is
    hole, the answer is that size, never a newer one (bytes the keeper appended since
    are data a later read must still return).
    """
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:   # nothing but hole from there to that size
            return max(offset, size)
        if exc.errno == errno.EINVAL:  # no SEEK_DATA here: no holes either
            return offset
        raise


def _pread(path: str, offset: int, limit: int) -> tuple[int, bytes]:
    """(start, data): at most ``limit`` bytes from the first kept byte at or after ``offset``;
    nothing past the end (clients choose the offset, up to 2**63 - 1, which pread would
    refuse past the filesystem's largest file).

    The keeper may punch the head of the file while we read: the first kept byte is
    looked up again after the read, and what the read returned below it (zeros from
    a hole punched meanwhile) is cut. Punching only moves forward, so bytes at or
    after the second mark were data when they were read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return offset, b""
    try:
        size = os.fstat(fd).st_size
        if offset >= size or limit <= 0:
            return offset, b""
        start = _data_start(fd, offset, size)
        if start >= size:
            return start, b""
        data = os.pread(fd, min(limit, size - start), start)
        kept = _data_start(fd, start, size)
        if kept > start:
            data, start = data[kept - start:], kept
        return start, data
    finally:
        os.close(fd)
