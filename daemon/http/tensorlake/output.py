"""Tensorlake's output routes: ``GET .../{stdout,stderr,output}`` and their ``/follow``.

``.../output`` is the stdout lines followed by the stderr lines: the two streams
are captured in separate files. A followed line's ``timestamp`` is when it
arrived, from the keeper's arrival index (:mod:`daemon.output_times`: the time
of the first index record at or past the line's end, 10 ms resolution). A line
read before its record is written waits for it (up to STAMP_HOLD); a line of a
stream without an index (or whose record never came) gets the time it is sent,
as before the index existed. Within a follow of both streams
each stream's lines are in order; the two are sent as they are read.

When the daemon's shutdown ends a follow (the process goes on: see
:mod:`..streaming`), the stream ends with ``event: shutdown`` instead of
``eof``: its output is not complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ...output import READ_CHUNK, OutputReader
from ...output_times import ArrivalTimes
from .. import streaming
from ..jsonio import dumps_bytes
from ..keys import supervisor_of
from . import wire

routes = web.RouteTableDef()
POLL = 0.02                 # seconds between looks at a followed process's files
STAMP_HOLD = 0.25           # seconds lines may wait for their index record (see LineReader.stamped)
INDEX_WAIT = 0.01           # seconds between looks at the index while waiting (the keeper's interval)
MAX_LINE = 1024 * 1024      # bytes; a longer line is delivered as several lines
STREAM_NAMES = ("stdout", "stderr", "output")


Line = tuple[str, int]     # a line's text and the offset just past its end (its newline)


class LineReader:
    """Lines of one captured stream, read incrementally from its file in bounded chunks.

    A line longer than MAX_LINE bytes is delivered as several lines of at most
    MAX_LINE bytes each (cut at a UTF-8 character boundary), so one giant line
    never makes a reader hold more than MAX_LINE + READ_CHUNK bytes. Lines are
    decoded as UTF-8 with U+FFFD for bytes that are not. Each line comes with the
    offset where it ends, for its arrival time (``times``).
    """

    def __init__(self, reader: OutputReader, stream: str, times: ArrivalTimes | None = None) -> None:
        self.reader, self.stream, self.times = reader, stream, times
        self.offset = 0
        self.partial = b""
        self.patient = True     # waits for index records (see stamped)

    async def batches(self, final: bool = False, end: int | None = None) -> AsyncIterator[list[Line]]:
        """The lines available now (up to byte ``end`` if given), one chunk's worth at a time;
        with ``final``, the last unterminated line too."""
        while end is None or self.offset < end:
            start, data = await self.reader.read(self.offset, READ_CHUNK if end is None
                                                 else end - self.offset)
            if not data:
                break
            lines: list[tuple[bytes, int]] = []
            if start != self.offset and self.partial:  # the rest of that line was dropped (cap)
                lines.append((self.partial, self.offset))
                self.partial = b""
            position = start - len(self.partial)
            self.offset = start + len(data)
            *complete, self.partial = (self.partial + data).split(b"\n")
            for line in complete:
                position += len(line) + 1
                lines.append((line, position))
            while len(self.partial) > MAX_LINE:
                cut = _char_boundary(self.partial, MAX_LINE)
                position += cut
                lines.append((self.partial[:cut], position))
                self.partial = self.partial[cut:]
            if lines:
                yield [(text, line_end) for line, line_end in lines for text in _pieces(line)]
        if final and self.partial:
            yield [(text, self.offset) for text in _pieces(self.partial)]
            self.partial = b""

    async def stamped(self, batch: list[Line]) -> list[tuple[str, int]]:
        """The batch's lines with their arrival times (unix ms; see the module doc).

        The keeper writes a line's index record within its 10 ms interval, often
        just after the bytes: lines read before their record wait for it (up to
        STAMP_HOLD, once: a keeper that stopped indexing is not waited for again),
        so a follower stamps what later readers stamp.
        """
        times = self.times
        if times is None:
            now = wire.now_ms()
            return [(text, now) for text, _ in batch]
        if batch and batch[-1][1] > times.last_end:
            await times.refresh()          # only the records appended since the last look
            deadline = asyncio.get_running_loop().time() + STAMP_HOLD
            while self.patient and times.present and batch[-1][1] > times.last_end:
                if asyncio.get_running_loop().time() >= deadline:
                    self.patient = False
                    break
                await asyncio.sleep(INDEX_WAIT)
                await times.refresh()
        now = wire.now_ms()
        stamped = []
        for text, line_end in batch:
            ms = times.time_of_end(line_end)
            stamped.append((text, now if ms is None else ms))
        return stamped


def _char_boundary(data: bytes, at: int) -> int:
    """``at``, moved back (at most 3 bytes) so as not to cut a UTF-8 character in two."""
    cut = at
    while cut > at - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut if data[cut] & 0xC0 != 0x80 else at


def _pieces(line: bytes) -> list[str]:
    """A line as text, in pieces of at most MAX_LINE bytes."""
    pieces = []
    while len(line) > MAX_LINE:
        cut = _char_boundary(line, MAX_LINE)
        pieces.append(line[:cut].decode(errors="replace"))
        line = line[cut:]
    pieces.append(line.decode(errors="replace"))
    return pieces


def _streams(name: str) -> tuple[str, ...]:
    return ("stdout", "stderr") if name == "output" else (name,)


def _stream_name(request: web.Request) -> str:
    parts = request.path.rstrip("/").split("/")
    return parts[-2] if parts[-1] == "follow" else parts[-1]


async def output(request: web.Request) -> web.StreamResponse:
    """``{pid, lines, line_count}``, streamed: the output is read and sent a chunk at a time.

    The lines are those on disk when the request arrives (each stream's size is
    taken first); the JSON is written as a prefix, then the lines chunk by chunk,
    then ``line_count``, so no output, however large, is ever whole in memory.
    """
    record = await wire.record_for(request)
    supervisor = supervisor_of(request)
    readers = [LineReader(await supervisor.output_reader(record.id, s), s)
               for s in _streams(_stream_name(request))]
    ends = [await r.reader.size() for r in readers]
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    count = 0
    try:
        if not await streaming.begin(request, response):
            return response
        await response.write(b'{"pid":' + dumps_bytes(wire.pid_of(record)) + b',"lines":[')
        for reader, end in zip(readers, ends, strict=True):
            async for batch in reader.batches(final=True, end=end):
                encoded = dumps_bytes([text for text, _ in batch])[1:-1]  # comma separated
                await response.write(encoded if count == 0 else b"," + encoded)
                count += len(batch)
        await response.write(b'],"line_count":' + str(count).encode() + b"}")
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


async def follow_lines(follow: streaming.Follow,
                       streams: tuple[str, ...]) -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    """(stream, [(line, arrival ms)]) as lines are written, a chunk's worth at a time, until
    the process is idle and all is read, or the daemon's shutdown ends the follow (the
    rounds of :class:`streaming.Follow`; ``follow.shutdown`` then says so).

    Raises ConnectionResetError once the client has gone away, even while the
    process prints nothing.
    """
    supervisor, process_id = follow.supervisor, follow.process_id
    readers = []
    for stream in streams:
        times = ArrivalTimes(supervisor.outputs.path(process_id, stream))
        await times.refresh()
        readers.append(LineReader(await supervisor.output_reader(process_id, stream), stream, times))
    async for active in follow.rounds():
        for reader in readers:
            async for batch in reader.batches(final=not active):
                yield reader.stream, await reader.stamped(batch)


def output_events(stream: str | None, batch: list[tuple[str, int]]) -> bytes:
    """``output`` events for a batch of (line, arrival ms); ``stream`` is named when the client
    follows both."""
    return b"".join(streaming.event("output", {"line": line, "timestamp": ms} if stream is None
                                    else {"line": line, "timestamp": ms, "stream": stream})
                    for line, ms in batch)


async def follow(request: web.Request) -> web.StreamResponse:
    record = await wire.record_for(request)
    name = _stream_name(request)
    response = streaming.event_stream()
    rounds = streaming.Follow(request, supervisor_of(request), record.id, POLL)
    try:
        if not await streaming.begin(request, response):
            return response
        async for stream, batch in follow_lines(rounds, _streams(name)):
            await response.write(output_events(stream if name == "output" else None, batch))
        await response.write(streaming.shutdown_event() if rounds.shutdown
                             else streaming.event("eof", {}))
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


for _name in STREAM_NAMES:
    routes.get(f"/api/v1/processes/{{pid}}/{_name}")(output)
    routes.get(f"/api/v1/processes/{{pid}}/{_name}/follow")(follow)
