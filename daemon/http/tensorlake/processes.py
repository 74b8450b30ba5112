"""Tensorlake's process routes: start, list, get, stdin, and seed 003's kill and signal.

Seed 003 (``DELETE /api/v1/processes/{pid}`` and its Send Signal), decisions where
its fragment is silent: a SIGKILL answers 204 once the process is gone; an
unmanaged pid that may not be signalled (with ``allow_unmanaged``) is its 500
failure body. An integer that no process can have (0, -5: the fragment's pid is
any int32) names no process: 404, one of its documented codes; only text that is
no integer is a 400. Without ``allow_unmanaged`` a pid Stablehand did not start
is a 404.
"""

from __future__ import annotations

import re
import signal

from aiohttp import web

from ...errors import ApiError, BadRequest, Conflict
from ...model import ACTIVE, State
from .. import parse, pids
from ..jsonio import json_response
from ..keys import supervisor_of
from . import wire

routes = web.RouteTableDef()

_INT32 = re.compile(r"-?[0-9]{1,10}")   # the digits of any int32 (and a few more)


@routes.post("/api/v1/processes")
async def start(request: web.Request) -> web.Response:
    spec = wire.spec(await wire.start_body(request))
    supervisor = supervisor_of(request)
    record, _ = await supervisor.create(spec)
    if record.state is State.IDLE and record.pid is None:
        raise BadRequest(record.error or "the process could not be started", code="spawn_failed")
    return json_response(wire.rendered(supervisor, record), status=201)


@routes.get("/api/v1/processes")
async def list_processes(request: web.Request) -> web.Response:
    supervisor = supervisor_of(request)
    records = await supervisor.list(limit=100)
    return json_response({"processes": [wire.rendered(supervisor, r) for r in records
                                        if r.pid is not None]})


@routes.get("/api/v1/processes/{pid}")
async def get_process(request: web.Request) -> web.Response:
    record = await wire.record_for(request)
    return json_response(wire.rendered(supervisor_of(request), record))


@routes.delete("/api/v1/processes/{pid}")
async def kill(request: web.Request) -> web.StreamResponse:
    """Seed 003: SIGKILL to the whole tree; 204 once it is gone."""
    pid = pids.from_path(request)
    if pid is None:
        text = request.match_info["pid"]
        if _INT32.fullmatch(text):
            return wire.error(404, f"process {text} not found", "not_found")
        return wire.error(400, f"invalid pid {text!r}", "invalid_pid")
    supervisor = supervisor_of(request)
    record = await supervisor.record_for_pid(pid)
    try:
        if record is not None and record.state in ACTIVE \
                and supervisor.is_live_leader(record):
            await supervisor.force_kill(record.id)
        elif record is None and pids.allow_unmanaged(request):
            if not await supervisor.signal_unmanaged(pid, signal.SIGKILL, grace=0):
                return wire.error(500, f"process {pid} did not exit", "kill_failed")
        else:
            return wire.error(404, f"process {pid} not found", "not_found")
    except ProcessLookupError:
        return wire.error(404, f"process {pid} not found", "not_found")
    except OSError as exc:
        return wire.error(500, f"failed to kill process {pid}: {exc.strerror or exc}", "kill_failed")
    return web.Response(status=204)


@routes.post("/api/v1/processes/{pid}/stdin")
@parse.raw_body
async def write_stdin(request: web.Request) -> web.Response:
    record = await wire.record_for(request)
    data = await request.read()
    try:
        await supervisor_of(request).write_stdin(record.id, data)
    except ApiError as exc:
        raise type(exc)(exc.message, code="stdin_not_writable") from None
    return web.Response(status=204)


@routes.post("/api/v1/processes/{pid}/stdin/close")
async def close_stdin(request: web.Request) -> web.Response:
    record = await wire.record_for(request)
    try:
        await supervisor_of(request).close_stdin(record.id)
    except ApiError as exc:
        raise type(exc)(exc.message, code="stdin_not_writable") from None
    return web.Response(status=204)


@routes.post("/api/v1/processes/{pid}/signal")
async def send_signal(request: web.Request) -> web.Response:
    """Seed 003's Send Signal: a signal number, to a process running under that pid."""
    pid = pids.from_path(request)
    if pid is None:
        return wire.error(400, f"invalid pid {request.match_info['pid']!r}", "invalid_pid")
    body = await parse.json_object(request, required=True)
    supervisor = supervisor_of(request)
    value = parse.integral(body.get("signal"))   # JSON's 15.0 is the integer 15
    try:
        number = parse.signal(value, supervisor.signal_number, names=False)
    except BadRequest:
        return wire.error(400, f"invalid signal {value!r}: must be a signal number", "invalid_signal")
    record, running = await pids.running_record(supervisor, pid)
    try:
        if running is not None:
            await supervisor.send_signal(running.id, number)
        elif record is None and pids.allow_unmanaged(request):
            await supervisor.signal_unmanaged(pid, number)
        elif record is None:
            return wire.error(404, f"process {pid} not found", "not_found")
        else:
            return wire.error(400, f"process {pid} is not running", "not_running")
    except Conflict:
        return wire.error(400, f"process {pid} is not running", "not_running")
    except ProcessLookupError:
        return wire.error(404, f"process {pid} not found", "not_found")
    except OSError as exc:
        return wire.error(500, f"failed to signal process {pid}: {exc.strerror or exc}", "signal_failed")
    return json_response({"success": True})
