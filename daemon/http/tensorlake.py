"""Tensorlake's sandbox process API, served on Stablehand's records.

Routes live under ``/api/v1/processes`` and address processes by OS pid (the
newest record that ran as it), except ``handle``, which is our record id. The
kill and signal routes are in compat.py (seed 003). Wire format, as Tensorlake:
timestamps are integer milliseconds since the Unix epoch; ``status`` is
``running`` | ``exited`` | ``signaled``; errors are ``{"error", "code"}``.

Decisions where Tensorlake's documents are silent:

* A queued record (max_concurrent reached) shows as ``running`` with ``pid`` null.
* ``GET .../output`` is the stdout lines followed by the stderr lines: the two
  streams are captured in separate files, so their interleaving is not known.
* A line's ``timestamp`` is when Stablehand read it (within ~20 ms of the write).
* ``POST /api/v1/processes/run``: a program that cannot start still gets a
  stream: ``started`` (pid null), then ``exit`` with ``reason: "failed"`` and
  the error. A run with a ``timeout`` keeps it if its client goes away; a run
  without one is stopped (SIGTERM, grace, SIGKILL) when its client goes away,
  so nothing runs unattended. On timeout the whole tree gets SIGKILL at once.
"""

from __future__ import annotations

import asyncio
import signal as signal_module
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..errors import ApiError, BadRequest, NotFound
from ..model import Process, State, iso_to_epoch
from ..output import READ_CHUNK, OutputReader
from ..supervisor import StartSpec, Supervisor
from . import parse, streaming
from .jsonio import dumps_bytes, json_response
from .keys import SUPERVISOR

routes = web.RouteTableDef()
POLL = 0.02
MAX_LINE = 1024 * 1024      # bytes; a longer line is delivered as several lines
STREAM_NAMES = ("stdout", "stderr", "output")
START_FIELDS = frozenset({"command", "args", "env", "working_dir", "stdin_mode", "stdout_mode",
                          "stderr_mode"})
MAX_RUN_TIMEOUT = 366 * 86400.0


def _supervisor(request: web.Request) -> Supervisor:
    return request.app[SUPERVISOR]


def _ms(iso: str | None) -> int | None:
    epoch = iso_to_epoch(iso)
    return None if epoch is None else int(epoch * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _signal_number(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        return None


def tensorlake_record(record: Process, stdin_writable: bool = False) -> dict[str, Any]:
    if record.state is State.IDLE:
        status = "signaled" if record.exit_signal else "exited"
    else:
        status = "running"
    return {
        "pid": record.pid,
        "handle": record.id,
        "status": status,
        "exit_code": record.exit_code,
        "signal": _signal_number(record.exit_signal),
        "stdin_writable": stdin_writable,
        "command": record.argv[0],
        "args": record.argv[1:],
        "started_at": _ms(record.started_at),
        "ended_at": _ms(record.completed_at),
    }


def _spec(body: dict[str, Any], *, allow_pipe: bool = True, extra: frozenset[str] = frozenset()) -> StartSpec:
    """A start body as a StartSpec; every malformed field is a 400 with code invalid_request."""
    try:
        return _checked_spec(body, allow_pipe=allow_pipe, extra=extra)
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None


def _checked_spec(body: dict[str, Any], *, allow_pipe: bool, extra: frozenset[str]) -> StartSpec:
    unknown = sorted(set(body) - START_FIELDS - extra)
    if unknown:
        raise BadRequest(f"unknown field {parse.shown(unknown[0])}")
    if "command" not in body:
        raise BadRequest("'command' is required")
    command = parse.string(body["command"], "command")
    args = body.get("args")
    args = [] if args is None else args  # null is "no args"; 0, "" and {} are errors
    if not isinstance(args, list):
        raise BadRequest("'args' must be an array of strings")
    args = [parse.string(a, "args", allow_empty=True) for a in args]
    env = parse.env_map(body.get("env"))
    cwd = parse.absolute_path(body.get("working_dir"), "working_dir")
    modes = {}
    for field, allowed in (("stdin_mode", ("closed", "pipe") if allow_pipe else ("closed",)),
                           ("stdout_mode", ("capture", "discard")),
                           ("stderr_mode", ("capture", "discard"))):
        value = body.get(field)
        value = allowed[0] if value is None else value
        if not isinstance(value, str) or value not in allowed:
            raise BadRequest(f"'{field}' must be one of {', '.join(allowed)}")
        modes[field] = value
    return StartSpec(argv=[command, *args], env=env, cwd=cwd,
                     stdin="pipe" if modes["stdin_mode"] == "pipe" else "null",
                     stdout_mode=modes["stdout_mode"], stderr_mode=modes["stderr_mode"])


async def _start_body(request: web.Request) -> dict[str, Any]:
    """The JSON object a start or run sends; a malformed one is invalid_request too."""
    try:
        return await parse.json_object(request, required=True)
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None


async def _record_for(request: web.Request) -> Process:
    text = request.match_info["pid"]
    pid = parse.os_pid(text)
    if pid is None:
        raise BadRequest(f"invalid pid {text!r}", code="invalid_pid")
    record = await _supervisor(request).record_for_pid(pid)
    if record is None:
        raise NotFound(f"process {text} not found", code="not_found")
    return record


def _stdin_writable(supervisor: Supervisor, record: Process) -> bool:
    return supervisor.stdin_open(record.id)


@routes.post("/api/v1/processes")
async def start(request: web.Request) -> web.Response:
    spec = _spec(await _start_body(request))
    supervisor = _supervisor(request)
    record, _ = await supervisor.create(spec)
    if record.state is State.IDLE and record.pid is None:
        raise BadRequest(record.error or "the process could not be started", code="spawn_failed")
    return json_response(tensorlake_record(record, _stdin_writable(supervisor, record)), status=201)


@routes.get("/api/v1/processes")
async def list_processes(request: web.Request) -> web.Response:
    supervisor = _supervisor(request)
    records = await supervisor.list_processes(limit=100)
    return json_response({"processes": [tensorlake_record(r, _stdin_writable(supervisor, r))
                                        for r in records if r.pid is not None]})


@routes.get("/api/v1/processes/{pid}")
async def get_process(request: web.Request) -> web.Response:
    record = await _record_for(request)
    return json_response(tensorlake_record(record, _stdin_writable(_supervisor(request), record)))


@routes.post("/api/v1/processes/{pid}/stdin")
@parse.raw_body
async def write_stdin(request: web.Request) -> web.Response:
    record = await _record_for(request)
    data = await request.read()
    try:
        await _supervisor(request).write_stdin(record.id, data)
    except ApiError as exc:
        raise type(exc)(exc.message, code="stdin_not_writable") from None
    return web.Response(status=204)


@routes.post("/api/v1/processes/{pid}/stdin/close")
async def close_stdin(request: web.Request) -> web.Response:
    record = await _record_for(request)
    try:
        await _supervisor(request).close_stdin(record.id)
    except ApiError as exc:
        raise type(exc)(exc.message, code="stdin_not_writable") from None
    return web.Response(status=204)


class LineReader:
    """Lines of one captured stream, read incrementally from its file in bounded chunks.

    A line longer than MAX_LINE bytes is delivered as several lines of at most
    MAX_LINE bytes each (cut at a UTF-8 character boundary), so one giant line
    never makes a reader hold more than MAX_LINE + READ_CHUNK bytes. Lines are
    decoded as UTF-8 with U+FFFD for bytes that are not.
    """

    def __init__(self, reader: OutputReader, stream: str) -> None:
        self.reader, self.stream = reader, stream
        self.offset = 0
        self.partial = b""

    async def batches(self, final: bool = False, end: int | None = None) -> AsyncIterator[list[str]]:
        """The lines available now (up to byte ``end`` if given), one chunk's worth at a time;
        with ``final``, the last unterminated line too."""
        while end is None or self.offset < end:
            start, data = await self.reader.read(self.offset, READ_CHUNK if end is None
                                                 else end - self.offset)
            if not data:
                break
            lines = []
            if start != self.offset and self.partial:  # the rest of that line was dropped (cap)
                lines.append(self.partial)
                self.partial = b""
            self.offset = start + len(data)
            *complete, self.partial = (self.partial + data).split(b"\n")
            lines += complete
            while len(self.partial) > MAX_LINE:
                cut = _char_boundary(self.partial, MAX_LINE)
                lines.append(self.partial[:cut])
                self.partial = self.partial[cut:]
            if lines:
                yield [text for line in lines for text in _pieces(line)]
        if final and self.partial:
            yield _pieces(self.partial)
            self.partial = b""


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
    record = await _record_for(request)
    supervisor = _supervisor(request)
    readers = [LineReader(await supervisor.output_reader(record.id, s), s)
               for s in _streams(_stream_name(request))]
    ends = [await r.reader.size() for r in readers]
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    count = 0
    try:
        await response.prepare(request)
        if streaming.headers_only(request):
            await response.write_eof()
            return response
        await response.write(b'{"pid":' + dumps_bytes(record.pid) + b',"lines":[')
        for reader, end in zip(readers, ends):
            async for batch in reader.batches(final=True, end=end):
                encoded = dumps_bytes(batch)[1:-1]  # the strings, comma separated
                await response.write(encoded if count == 0 else b"," + encoded)
                count += len(batch)
        await response.write(b'],"line_count":' + str(count).encode() + b"}")
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


def _sse() -> web.StreamResponse:
    """An event stream, to prepare inside the handler's ``try`` (the client may be gone)."""
    return web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})


def _event(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps_bytes(data) + b"\n\n"


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(_event(event, data))


async def _follow_lines(request: web.Request, process_id: int,
                        streams: tuple[str, ...]) -> AsyncIterator[tuple[str, list[str]]]:
    """(stream, lines) as lines are written, a chunk's worth at a time, until the process
    is idle and all is read.

    Raises ConnectionResetError once the client has gone away, even while the
    process prints nothing.
    """
    supervisor = _supervisor(request)
    readers = [LineReader(await supervisor.output_reader(process_id, s), s) for s in streams]
    while True:
        if streaming.gone(request):
            raise ConnectionResetError("the client went away")
        active = supervisor.is_active(process_id)  # look before reading: no final line is missed
        for reader in readers:
            async for batch in reader.batches(final=not active):
                yield reader.stream, batch
        if not active:
            return
        await asyncio.sleep(POLL)


async def follow(request: web.Request) -> web.StreamResponse:
    record = await _record_for(request)
    name = _stream_name(request)
    response = _sse()
    try:
        await response.prepare(request)
        if streaming.headers_only(request):
            await response.write_eof()
            return response
        async for stream, batch in _follow_lines(request, record.id, _streams(name)):
            now = _now_ms()
            await response.write(b"".join(
                _event("output", {"line": line, "timestamp": now, "stream": stream}
                       if name == "output" else {"line": line, "timestamp": now})
                for line in batch))
        await _send(response, "eof", {})
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


for _name in STREAM_NAMES:
    routes.get(f"/api/v1/processes/{{pid}}/{_name}")(output)
    routes.get(f"/api/v1/processes/{{pid}}/{_name}/follow")(follow)


@routes.post("/api/v1/processes/run")
async def run(request: web.Request) -> web.StreamResponse:
    """Run to completion in one streaming request: started, output..., exit."""
    body = await _start_body(request)
    timeout = body.get("timeout")
    if timeout is not None:
        try:
            timeout = parse.number(timeout, "timeout", maximum=MAX_RUN_TIMEOUT, allow_zero=False)
        except ApiError as exc:
            raise BadRequest(exc.message, code="invalid_request") from None
    if "stdin_mode" in body:
        raise BadRequest("a run's stdin is always closed: 'stdin_mode' is not accepted",
                         code="invalid_request")
    spec = _spec(body, allow_pipe=False, extra=frozenset({"timeout"}))
    spec.timeout, spec.grace = timeout, (0.0 if timeout is not None else None)
    supervisor = _supervisor(request)
    record, _ = await supervisor.create(spec)
    response = _sse()
    try:
        await response.prepare(request)
        await _send(response, "started", {"handle": record.id, "pid": record.pid,
                                          "started_at": _ms(record.started_at) or _now_ms()})
        async for stream, batch in _follow_lines(request, record.id, ("stdout", "stderr")):
            now = _now_ms()
            await response.write(b"".join(
                _event("output", {"line": line, "timestamp": now, "stream": stream}) for line in batch))
        final = await supervisor.get(record.id)
        await _send(response, "exit", _exit_event(final))
        await response.write_eof()
    except asyncio.CancelledError:
        await _abandoned(supervisor, record)
        raise
    except ConnectionError:
        await _abandoned(supervisor, record)
        if not streaming.client_gone(request):
            raise
    return response


def _exit_event(record: Process) -> dict[str, Any]:
    signal_number = _signal_number(record.exit_signal)
    if record.exit_state is not None and record.exit_state.value == "timeout":
        reason = "timed_out"
    elif record.pid is None:
        reason = "failed"
    elif signal_number is not None:
        reason = "signaled"
    else:
        reason = "exited"
    event: dict[str, Any] = {"exit_code": record.exit_code, "signal": signal_number, "reason": reason}
    if reason == "failed":
        event["error"] = record.error
    return event


async def _abandoned(supervisor: Supervisor, record: Process) -> None:
    """The client went away mid-run: a run without a timeout is stopped, never left unattended."""
    if record.timeout is None and supervisor.is_active(record.id):
        try:
            await supervisor.stop(record.id)
        except ApiError:
            pass
