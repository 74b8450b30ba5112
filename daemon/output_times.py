"""When captured output arrived: the keeper's arrival index, read off the event loop.

Beside each stream file ``output/<id>.<stream>`` the keeper writes
``<id>.<stream>.idx``: fixed 16-byte records, little-endian ``(end offset u64,
unix time ms u64)``, "by that time the stream held ``end`` bytes", at most one
per 10 ms per stream (:mod:`daemon.keeper.pump`, whose
:class:`~daemon.keeper.pump.OutputIndex` does the lookups). This module reads
it for ``GET /processes/{id}/output?since=…&timestamps=1``, ``stablehand logs
--since/--timestamps`` and the ``timestamp`` of Tensorlake's output events.
Like :mod:`daemon.output_read`, every read of the file runs in a thread, never
on the event loop; a reader that follows a stream reads only the records
appended since its last look.

Decisions:

* A line's time is the time of the first record whose end is at or past the
  line's end offset (its newline included): the record by which its last byte
  had arrived. Lines that arrived in the same 10 ms share a time.
* A line past the last record (it arrived within the last interval and its
  record is not written yet) has no recorded time yet: a follower waits for the
  record a little (``LineStamper``'s ``hold``), so that it stamps what a later
  reader stamps. A line still without one, or in a stream without an index
  (output captured before the keeper kept one), gets the caller's fallback. The
  native route uses the next time known after it: the record's ``completedAt``
  once the process has ended, else now (when it was read); Tensorlake's events
  the time they are sent, as before the index.
* ``since`` starts at the first byte that arrived at or after it
  (``OutputIndex.offset_at``). Without an index the record's own times decide
  what they can: a process that completed before ``since`` has nothing newer, one
  that started at or after it has everything; otherwise nothing is known and
  everything kept is shown (more rather than less).
* ``since`` on the wire is unix seconds (``1700000000``, ``1700000000.25``) or an
  RFC 3339 time with its zone (``2026-12-03T13:10:49Z``,
  ``…49.5+01:00``); anything else is refused (the route answers 400). Every
  valid value is taken: one past the year 9999 means "nothing yet", one before
  1970 "everything".
  Relative times (``10m``) are the CLI's: it sends the absolute time.
* Timestamps in a stamped body are RFC 3339 UTC to the millisecond with a
  ``Z`` (``2026-12-03T13:10:49.123Z``), then one space, before each line, as
  ``docker logs --timestamps`` does; fixed width, so they sort as text.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import re
import time
from collections.abc import Callable

from .keeper.pump import INDEX_RECORD, OutputIndex

MAX_SINCE_SECONDS = 253402300799          # 9999-12-31T23:59:59Z
STAMP_WIDTH = len("2026-12-03T13:10:49.123Z ")
MAX_LINE = 1024 * 1024   # bytes a stamper holds while waiting for a newline; then it cuts

_UNIX = re.compile(r"\d{1,18}(\.\d+)?")
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))")


def since_ms(text: str) -> int:
    """``since`` (unix seconds or RFC 3339 with a zone) as unix milliseconds; ValueError
    with a message for a person otherwise."""
    if _UNIX.fullmatch(text):
        return int(round(min(float(text), MAX_SINCE_SECONDS) * 1000))   # later: nothing is newer
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("must be unix seconds (1700000000) or an RFC 3339 time with its zone "
                         "(2026-12-03T13:10:49Z)")
    year, month, day, hour, minute, second, fraction, utc, sign, zone_h, zone_m = match.groups()
    if utc:
        zone = dt.UTC
    else:
        if int(zone_h) > 23 or int(zone_m) > 59:
            raise ValueError("is not a valid time: the zone offset must be -23:59 to +23:59")
        offset = dt.timedelta(hours=int(zone_h), minutes=int(zone_m))
        zone = dt.timezone(offset if sign == "+" else -offset)
    early = int(year) < 1970     # before any output; year 0000 is valid RFC 3339, not a datetime
    try:   # a leap second (:60) counts as :59
        when = dt.datetime(2000 if early else int(year), int(month), int(day), int(hour),
                           int(minute), min(int(second), 59),
                           int((fraction or "0").ljust(6, "0")[:6]), zone)
    except ValueError as exc:
        raise ValueError(f"is not a valid time: {exc}") from None
    return 0 if early else max(0, int(when.timestamp() * 1000))


def iso_ms(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds and a ``Z``."""
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class ArrivalTimes:
    """The arrival index of one stream file, loaded once and then extended as it grows."""

    def __init__(self, stream_path: str) -> None:
        self.path = stream_path + ".idx"
        self.index = OutputIndex([], True)
        self._read = 0            # bytes of the index file taken in so far
        self._loaded = False
        self.present = False      # whether the index file was there at the last look

    @property
    def known(self) -> bool:
        """Whether the stream has any arrival record (else every time is the fallback)."""
        return bool(self.index.ends)

    @property
    def last_end(self) -> int:
        """The end offset of the newest record read (-1 if none)."""
        return self.index.ends[-1] if self.index.ends else -1

    async def refresh(self) -> None:
        """Take in what the keeper appended since the last look (all of it, the first time)."""
        await asyncio.to_thread(self._refresh)

    def _refresh(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._load()
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.present = False
            return
        self.present = True
        try:
            size = os.fstat(fd).st_size // INDEX_RECORD.size * INDEX_RECORD.size
            data = os.pread(fd, size - self._read, self._read) if size > self._read else b""
        finally:
            os.close(fd)
        self._take(data)

    def _load(self) -> None:
        """The first look: the records still kept (the keeper punches the head of a long index,
        which reads as zeros), as :meth:`OutputIndex.load` reads them, and where they end."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        self.present = True
        try:
            size = os.fstat(fd).st_size // INDEX_RECORD.size * INDEX_RECORD.size
            try:
                start = os.lseek(fd, 0, os.SEEK_DATA)
            except OSError:        # ENXIO: all hole, or empty
                start = size
            start = min(size, -(-start // INDEX_RECORD.size) * INDEX_RECORD.size)
            data = os.pread(fd, size - start, start) if size > start else b""
        finally:
            os.close(fd)
        self.index = OutputIndex([], start == 0)
        self._read = start
        self._take(data)

    def _take(self, data: bytes) -> None:
        usable = len(data) // INDEX_RECORD.size * INDEX_RECORD.size
        self._read += usable
        for end, ms in INDEX_RECORD.iter_unpack(data[:usable]):
            if (end, ms) == (0, 0):
                continue           # a punched (dropped) record
            if self.index.ends and end < self.index.ends[-1]:
                continue           # never backwards (a reader must not see time reversed)
            self.index.ends.append(end)
            self.index.times.append(max(ms, self.index.times[-1]) if self.index.times else ms)

    def time_of_end(self, end: int) -> int | None:
        """When the bytes before offset ``end`` (a line's end) had all arrived; None if unknown."""
        return self.index.time_of(max(0, end - 1))

    def offset_since(self, ms: int) -> int | None:
        """The first offset that arrived at or after ``ms``; None without an index."""
        if not self.index.ends:
            return None
        return self.index.offset_at(ms)


class LineStamper:
    """Prefixes each line of a byte stream with its arrival time (see the module doc).

    Fed the stream's bytes in order (``feed(offset, data)``), it splits them into
    lines; :meth:`release` gives the complete ones stamped, and an unterminated
    line is held until its newline arrives, up to MAX_LINE bytes (then that much
    goes out as a line of its own). :meth:`finish` gives what is held, stamped,
    without adding a newline. A gap in the offsets (bytes dropped by the output
    cap meanwhile) ends the held line there.

    With ``hold`` (seconds; for a follow), a complete line the index does not
    cover yet is kept back until it does or ``hold`` has passed (then it gets the
    fallback), if the stream has an index file: the keeper writes a line's record
    within its 10 ms interval, often just after the bytes, so a follower that
    reads them first still stamps the line with the time any later reader sees.
    :meth:`release` gives what may go now; call :meth:`needs_refresh` and
    :meth:`ArrivalTimes.refresh` before it.
    """

    def __init__(self, times: ArrivalTimes, start: int, fallback: Callable[[], int],
                 hold: float = 0.0) -> None:
        self.times, self.fallback, self.hold = times, fallback, hold
        self.start = start           # the offset of the first held byte
        self.held = b""
        self.ready: collections.deque[tuple[int, bytes, float]] = collections.deque()  # (end, line, split at)
        self._stamps: dict[int, bytes] = {}

    def needs_refresh(self) -> bool:
        """Whether a line waiting to be stamped is past the newest record read."""
        end = self.ready[-1][0] if self.ready else -1
        return max(end, self.start + len(self.held)) > self.times.last_end

    def feed(self, offset: int, data: bytes) -> None:
        now = time.monotonic()
        if offset != self.start + len(self.held):
            if self.held:
                self.ready.append((self.start + len(self.held), self.held, now))
            self.start, self.held = offset, b""
        buffer = self.held + data
        cut = buffer.rfind(b"\n") + 1
        position = 0
        while position < cut:
            end = buffer.index(b"\n", position) + 1
            self.ready.append((self.start + end, buffer[position:end], now))
            position = end
        self.start += cut
        self.held = buffer[cut:]
        while len(self.held) > MAX_LINE:
            self.start += MAX_LINE
            self.ready.append((self.start, self.held[:MAX_LINE], now))
            self.held = self.held[MAX_LINE:]

    def release(self, final: bool = False) -> bytes:
        """The lines that may go now, stamped; with ``final`` all of them and the held one."""
        out = []
        now = time.monotonic()
        while self.ready:
            end, line, split_at = self.ready[0]
            ms = self.times.time_of_end(end)
            if ms is None:
                if not final and self.times.present and now - split_at < self.hold:
                    break
                ms = self.fallback()
            out.append(self._stamp(ms) + line)
            self.ready.popleft()
        if final and self.held:
            end = self.start + len(self.held)
            ms = self.times.time_of_end(end)
            out.append(self._stamp(self.fallback() if ms is None else ms) + self.held)
            self.start, self.held = end, b""
        return b"".join(out)

    def finish(self) -> bytes:
        """Everything still waiting, the unterminated line last (no newline added)."""
        return self.release(final=True)

    def _stamp(self, ms: int) -> bytes:
        stamp = self._stamps.get(ms)
        if stamp is None:
            if len(self._stamps) > 4096:
                self._stamps.clear()
            stamp = self._stamps[ms] = iso_ms(ms).encode() + b" "
        return stamp
