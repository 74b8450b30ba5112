"""Output capture: a child's pipe pumped into ``output/<id>.<stream>``, capped as it is written.

The cap. A stream file keeps at most ``cap`` bytes of the newest output plus a
bounded slack. Before a write would take the file's allocated extent (from the
first kept block to the end, rounded up to a block) past ``cap + slack``, the
oldest bytes are freed by punching a hole at the head of the file
(``fallocate(PUNCH_HOLE | KEEP_SIZE)``), block aligned, leaving the newest ``cap``
bytes (up to one block more). So offsets keep their meaning, byte N of the file
is byte N the child wrote, and the disk use of a stream never exceeds
``cap + slack``, where ``slack = min(max(cap / 4, 64 KiB), 768 KiB)``: punching in
slack-sized steps keeps each punch small (fast even on ext4 with ``discard``)
and the punches rare. A single read larger than the whole cap writes only its
tail (the skipped head becomes part of the hole). The first kept byte is found
by :func:`first_kept_offset` (``lseek(SEEK_DATA)``) or ``dropped`` in ``list``.

When the filesystem cannot punch holes (``EOPNOTSUPP``: FAT, old NFS), the file
keeps the *first* ``cap`` bytes and the rest is read from the pipe and counted
as ``lost``; the same happens to a write that fails (``ENOSPC``, ``EIO``). Lost
bytes are left out of the file, not stored as zeros (a reader must never be
served bytes the child did not write), so offsets after a loss count the bytes
stored, and ``lost`` says how many are missing. Not rotation (offsets would
change meaning) and not backpressure: a child must not hang because of where
its log lives. Backpressure is reserved for a keeper that
cannot keep up: it reads at most :data:`TURN_BYTES` per stream per turn of its
loop, and a child writing faster blocks on its full pipe. Memory never grows
with output: one shared read buffer of :data:`CHUNK` bytes.

The index. ``<stream file>.idx`` holds fixed 16-byte records, little-endian
``(end offset u64, unix time ms u64)``: by that time the stream held ``end``
bytes. A record is written at most every :data:`INDEX_INTERVAL_MS` per stream
(later chunks within the interval fold into a pending record, written when the
interval is over or the stream ends), and times never go backwards. The index
is bounded too: past :data:`INDEX_MAX` bytes its head is punched, keeping the
newest :data:`INDEX_KEEP` bytes, so data and index together stay under
``cap + 1 MiB``. :class:`OutputIndex` maps offsets to times for readers.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import os
import struct
import time

BLOCK = 4096
CHUNK = 64 * 1024               # one read from a pipe
TURN_BYTES = 4 * CHUNK          # most read from one stream in one turn of the loop
SLACK_MIN, SLACK_MAX = 64 * 1024, 768 * 1024
INDEX_INTERVAL_MS = 10
INDEX_RECORD = struct.Struct("<QQ")
INDEX_MAX = 128 * 1024
INDEX_KEEP = 64 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_OPEN = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def slack_for(cap: int) -> int:
    return min(max(cap // 4, SLACK_MIN), SLACK_MAX)


def punch(fd: int, start: int, end: int) -> None:
    """Free ``[start, end)`` of a file, keeping its size. OSError when it cannot."""
    while _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, end - start):
        err = ctypes.get_errno()
        if err != errno.EINTR:   # the keeper's signal handlers do not restart system calls
            raise OSError(err, os.strerror(err))


def first_kept_offset(path: str) -> int:
    """The offset of the first byte a capped stream file still holds (its size if none).

    Everything below it was dropped by the cap: it reads as zeros and must not be
    served. 0 for a file that was never trimmed; FileNotFoundError if it is missing.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            return os.lseek(fd, 0, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:   # all hole, or empty
                return os.fstat(fd).st_size
            raise
    finally:
        os.close(fd)


def _round_up(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


class OutputStream:
    """One captured stream: owns the pipe's read end, the stream file and its index."""

    __slots__ = (
        "can_punch",
        "cap",
        "closed",
        "dropped",
        "fd",
        "idx",
        "idx_dropped",
        "idx_size",
        "last_at",
        "last_ms",
        "lost",
        "pending_end",
        "path",
        "pending_ms",
        "pipe",
        "size",
        "slack",
    )

    def __init__(self, pipe: int, path: str, cap: int | None) -> None:
        """Takes ``pipe``; the file and its index are opened (made) at the first byte.

        Lazily, because most children never write to one of their streams (many to
        neither), and making two files with their indexes at every spawn cost the
        keeper four inode allocations per start (15 µs to 800 µs each on ext4,
        depending on the directory). A stream that never wrote has no file, which
        readers take as empty.
        """
        self.path = path
        self.fd = self.idx = -1
        self.pipe = pipe
        self.size = self.dropped = self.idx_size = self.idx_dropped = 0
        self.lost = 0
        self.cap = cap
        self.slack = slack_for(cap) if cap is not None else 0
        self.can_punch = True
        self.last_ms = 0                 # unix time (ms) in the last record written
        self.last_at = 0.0               # monotonic time it was written
        self.pending_end = -1            # a record waiting for its interval, or -1
        self.pending_ms = 0
        self.closed = False

    # --- pumping ---

    def pump(self, buf: bytearray, limit: int = TURN_BYTES) -> bool:
        """Move what the pipe holds (at most ``limit`` bytes) to the file. False at EOF."""
        view = memoryview(buf)
        moved = 0
        while moved < limit:
            try:
                n = os.readv(self.pipe, [buf])
            except BlockingIOError:
                return True
            except OSError:
                return False
            if n == 0:
                return False
            self._store(view[:n])
            moved += n
        return True

    def _open(self) -> bool:
        """Open (making) the file and its index, appending to what an earlier run of the
        same id left. False, with the bytes counted as lost by the caller, if it cannot."""
        try:
            self.fd = os.open(self.path, _OPEN, 0o600)
            self.idx = os.open(self.path + ".idx", _OPEN, 0o600)
        except OSError:
            if self.fd >= 0:
                os.close(self.fd)
            self.fd = self.idx = -1
            return False
        self.size = os.fstat(self.fd).st_size
        self.dropped = first_kept_offset(self.path) if self.size else 0
        self.idx_size = os.fstat(self.idx).st_size // INDEX_RECORD.size * INDEX_RECORD.size
        self.idx_dropped = first_kept_offset(self.path + ".idx") if self.idx_size else 0
        return True

    def _store(self, data: memoryview) -> None:
        n = len(data)
        if self.fd < 0 and not self._open():
            self.lost += n
            return
        end = self.size + n
        skip = 0
        if self.cap is not None and _round_up(end) - self.dropped > self.cap + self.slack:
            target = (end - self.cap) // BLOCK * BLOCK   # the new first kept byte
            if self.can_punch and target > self.dropped:
                try:
                    punch(self.fd, self.dropped, target)
                    self.dropped = target
                except OSError:
                    self.can_punch = False
            if self.can_punch:
                skip = max(0, target - self.size)
            else:   # keep the first cap bytes, count the rest as lost
                room = max(0, self.dropped + self.cap - self.size)
                self.lost += n - min(n, room)
                data = data[:room]
                n = len(data)
                end = self.size + n
        try:
            written = skip
            while written < n:
                written += os.pwrite(self.fd, data[written:], self.size + written)
        except OSError:
            self.lost += n - written
            end = self.size + written
        if end > self.size:
            self.size = end
            self._note(end)

    # --- the index ---

    def _note(self, end: int) -> None:
        """Bytes up to ``end`` have arrived: record it now, or when the interval is over.

        The interval runs on the monotonic clock; the wall clock only gives the
        value, never going backwards (a clock stepped back must not stall the index).
        """
        self.pending_end, self.pending_ms = end, max(int(time.time() * 1000), self.last_ms)
        if time.monotonic() - self.last_at >= INDEX_INTERVAL_MS / 1000:
            self.flush_index()

    def index_due(self) -> float | None:
        """Monotonic time when the pending record falls due, or None if nothing is pending."""
        return None if self.pending_end < 0 else self.last_at + INDEX_INTERVAL_MS / 1000

    def flush_index(self) -> None:
        if self.pending_end < 0 or self.idx < 0:
            return
        record = INDEX_RECORD.pack(self.pending_end, self.pending_ms)
        self.last_ms, self.last_at, self.pending_end = self.pending_ms, time.monotonic(), -1
        if self.idx_size - self.idx_dropped >= INDEX_MAX:
            target = (self.idx_size - INDEX_KEEP) // BLOCK * BLOCK
            try:
                punch(self.idx, self.idx_dropped, target)
                self.idx_dropped = target
            except OSError:
                return   # cannot bound the index: stop indexing rather than grow
        try:
            self.idx_size += os.pwrite(self.idx, record, self.idx_size)
        except OSError:
            pass

    def close(self) -> None:
        """Write the last record and close the pipe, the file and the index (once)."""
        if self.closed:
            return
        self.closed = True
        self.flush_index()
        for fd in (self.pipe, self.fd, self.idx):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


class OutputIndex:
    """Offset -> arrival time for a stream, read from its ``.idx`` file (for readers)."""

    def __init__(self, records: list[tuple[int, int]], complete_head: bool) -> None:
        self.ends = [end for end, _ in records]
        self.times = [ms for _, ms in records]
        self._complete_head = complete_head   # the first record covers offset 0

    @classmethod
    def load(cls, stream_path: str) -> OutputIndex:
        """The kept records of ``<stream_path>.idx`` (empty if there is no index)."""
        try:
            fd = os.open(stream_path + ".idx", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls([], True)
        try:
            try:
                start = os.lseek(fd, 0, os.SEEK_DATA)
            except OSError:
                return cls([], True)
            start = -(-start // INDEX_RECORD.size) * INDEX_RECORD.size
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - start, start) if size > start else b""
        finally:
            os.close(fd)
        usable = len(data) // INDEX_RECORD.size * INDEX_RECORD.size
        records = [r for r in INDEX_RECORD.iter_unpack(data[:usable]) if r != (0, 0)]
        return cls(records, start == 0)

    def time_of(self, offset: int) -> int | None:
        """Unix time (ms) by which the byte at ``offset`` had arrived (10 ms resolution).

        None when it is not known: the byte is past the last record (it arrived
        within the last interval) or before the oldest record kept.
        """
        i = bisect.bisect_right(self.ends, offset)
        if i >= len(self.ends) or (i == 0 and not self._complete_head):
            return None
        return self.times[i]

    def offset_at(self, ms: int) -> int | None:
        """The first offset that arrived at or after ``ms`` (for ``--since``); None if unknown."""
        i = bisect.bisect_left(self.times, ms)
        if i == 0:
            return 0 if self._complete_head else (self.ends[0] if self.ends else None)
        return self.ends[i - 1]
