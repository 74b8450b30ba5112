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
from ..supervisor import StartSpec, Supervisor
from . import parse
from .jsonio import dumps, json_response
from .keys import SUPERVISOR

routes = web.RouteTableDef()
POLL = 0.02
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
    unknown = sorted(set(body) - START_FIELDS - extra)
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'", code="invalid_request")
    if "command" not in body:
        raise BadRequest("'command' is required", code="invalid_request")
    command = parse.string(body["command"], "command")
    args = body.get("args") or []
    if not isinstance(args, list):
        raise BadRequest("'args' must be an array of strings", code="invalid_request")
    args = [parse.string(a, "args", allow_empty=True) for a in args]
    try:
        env = parse.env_map(body.get("env"))
        cwd = parse.absolute_path(body.get("working_dir"), "working_dir")
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None
    modes = {}
    for field, allowed in (("stdin_mode", ("closed", "pipe") if allow_pipe else ("closed",)),
                           ("stdout_mode", ("capture", "discard")),
                           ("stderr_mode", ("capture", "discard"))):
        value = body.get(field) or allowed[0]
        if value not in allowed:
            raise BadRequest(f"'{field}' must be one of {', '.join(allowed)}", code="invalid_request")
        modes[field] = value
    return StartSpec(argv=[command, *args], env=env, cwd=cwd,
                     stdin="pipe" if modes["stdin_mode"] == "pipe" else "null",
                     stdout_mode=modes["stdout_mode"], stderr_mode=modes["stderr_mode"])


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
    spec = _spec(await parse.json_object(request, required=True))
    supervisor = _supervisor(request)
    record, _ = await supervisor.create(spec)
    if record.state is State.IDLE and record.pid is None:
        raise BadRequest(record.error or "the process could not be started", code="spawn_failed")
    return json_response(tensorlake_record(record, _stdin_writable(supervisor, record)), status=201)


@routes.get("/api/v1/processes")
async def list_processes(request: web.Request) -> web.Response:
    supervisor = _supervisor(request)
    records = await supervisor.registry.list(limit=100)
    return json_response({"processes": [tensorlake_record(r, _stdin_writable(supervisor, r))
                                        for r in records if r.pid is not None]})


@routes.get("/api/v1/processes/{pid}")
async def get_process(request: web.Request) -> web.Response:
    record = await _record_for(request)
    return json_response(tensorlake_record(record, _stdin_writable(_supervisor(request), record)))


@routes.post("/api/v1/processes/{pid}/stdin")
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
    """Complete lines of one captured stream, read incrementally from its file."""

    def __init__(self, supervisor: Supervisor, process_id: int, stream: str) -> None:
        self.supervisor, self.process_id, self.stream = supervisor, process_id, stream
        self.offset = 0
        self.partial = b""

    async def lines(self, final: bool = False) -> list[str]:
        while True:
            start, data, _ = await self.supervisor.read_output(self.process_id, self.stream,
                                                               self.offset, 1 << 20)
            if not data:
                break
            self.offset = start + len(data)
            self.partial += data
        *complete, self.partial = self.partial.split(b"\n")
        if final and self.partial:
            complete.append(self.partial)
            self.partial = b""
        return [line.decode(errors="replace") for line in complete]


def _streams(name: str) -> tuple[str, ...]:
    return ("stdout", "stderr") if name == "output" else (name,)


def _stream_name(request: web.Request) -> str:
    parts = request.path.rstrip("/").split("/")
    return parts[-2] if parts[-1] == "follow" else parts[-1]


async def output(request: web.Request) -> web.Response:
    record = await _record_for(request)
    supervisor = _supervisor(request)
    lines: list[str] = []
    for stream in _streams(_stream_name(request)):
        lines += await LineReader(supervisor, record.id, stream).lines(final=True)
    return json_response({"pid": record.pid, "lines": lines, "line_count": len(lines)})


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {event}\ndata: {dumps(data)}\n\n".encode())


async def _follow_lines(request: web.Request, process_id: int,
                        streams: tuple[str, ...]) -> AsyncIterator[tuple[str, str]]:
    """(stream, line) as lines are written, until the process is idle and all is read.

    Raises ConnectionResetError once the client has gone away, even while the
    process prints nothing.
    """
    supervisor = _supervisor(request)
    readers = [LineReader(supervisor, process_id, s) for s in streams]
    while True:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the client went away")
        active = supervisor.is_active(process_id)  # look before reading: no final line is missed
        for reader in readers:
            for line in await reader.lines(final=not active):
                yield reader.stream, line
        if not active:
            return
        await asyncio.sleep(POLL)


async def follow(request: web.Request) -> web.StreamResponse:
    record = await _record_for(request)
    name = _stream_name(request)
    response = await _sse(request)
    async for stream, line in _follow_lines(request, record.id, _streams(name)):
        data: dict[str, Any] = {"line": line, "timestamp": _now_ms()}
        if name == "output":
            data["stream"] = stream
        await _send(response, "output", data)
    await _send(response, "eof", {})
    await response.write_eof()
    return response


for _name in STREAM_NAMES:
    routes.get(f"/api/v1/processes/{{pid}}/{_name}")(output)
    routes.get(f"/api/v1/processes/{{pid}}/{_name}/follow")(follow)


@routes.post("/api/v1/processes/run")
async def run(request: web.Request) -> web.StreamResponse:
    """Run to completion in one streaming request: started, output..., exit."""
    body = await parse.json_object(request, required=True)
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
    response = await _sse(request)
    await _send(response, "started", {"handle": record.id, "pid": record.pid,
                                      "started_at": _ms(record.started_at) or _now_ms()})
    try:
        async for stream, line in _follow_lines(request, record.id, ("stdout", "stderr")):
            await _send(response, "output", {"line": line, "timestamp": _now_ms(), "stream": stream})
        final = await supervisor.get(record.id)
        await _send(response, "exit", _exit_event(final))
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        await _abandoned(supervisor, record)
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
