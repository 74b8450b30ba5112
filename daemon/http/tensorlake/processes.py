"""Tensorlake's process routes: start, list, get, stdin, restart, and seed 003's kill and signal.

Every ``{pid}`` is a pid or a managed process's name (addressing.py).

Seed 003 (``DELETE /api/v1/processes/{pid}`` and its Send Signal), decisions where
its fragment is silent: a SIGKILL answers 204 once the process is gone; a pid
Stablehand did not start that may not be signalled (with ``allow_unmanaged``) is
its 500 failure body. An integer that no process can have (0, -5: the fragment's
pid is any int32) names no process: 404, one of its documented codes (``-5`` is
a name, and no process has it). Without ``allow_unmanaged`` a pid Stablehand did
not start is a 404.

Managed processes (Tensorlake's PR #730), where its clients are silent:

* DELETE stops a managed process for good (no restart), also while it waits out
  a backoff (no process runs then: the record just ends) or is queued; any pid
  it ever ran under addresses it.
* ``POST .../restart`` (an empty body) stops the current run (SIGTERM, the
  record's grace, SIGKILL) and starts the next at once, the backoff reset; it
  answers 200 with ``ProcessInfo`` of the new run. 409 ``not_managed`` for a
  process started without name/restart/health_check, 409 ``not_running`` for a
  managed one that ended or is being killed (or is still queued).
* A name a live process holds is a 409 ``name_conflict``; an ended process frees
  its name (a new start takes it; the name then addresses the new process).
"""

from __future__ import annotations

import signal

from aiohttp import web

from ...errors import ApiError, BadRequest, Conflict
from ...model import ACTIVE, State
from .. import parse, pids
from ..jsonio import json_response
from ..keys import supervisor_of
from . import addressing, wire

routes = web.RouteTableDef()


@routes.post("/api/v1/processes")
async def start(request: web.Request) -> web.Response:
    spec = wire.spec(await wire.start_body(request), managed=True)
    supervisor = supervisor_of(request)
    try:
        record, _ = await supervisor.create(spec)
    except Conflict as exc:   # only a name a live process holds conflicts here
        raise Conflict(exc.message, code="name_conflict") from None
    if record.state is State.IDLE and record.pid is None:
        raise BadRequest(record.error or "the process could not be started", code="spawn_failed")
    return json_response(wire.rendered(supervisor, record), status=201)


@routes.get("/api/v1/processes")
async def list_processes(request: web.Request) -> web.Response:
    supervisor = supervisor_of(request)
    records = await supervisor.list(limit=100)
    # Processes that ran, and queued ones (pid 0); not a start that failed (its start was a 400).
    return json_response({"processes": [wire.rendered(supervisor, r) for r in records
                                        if r.pid is not None or r.state is State.QUEUED]})


@routes.get("/api/v1/processes/{pid}")
async def get_process(request: web.Request) -> web.Response:
    record = await wire.record_for(request)
    return json_response(wire.rendered(supervisor_of(request), record))


@routes.delete("/api/v1/processes/{pid}")
async def kill(request: web.Request) -> web.StreamResponse:
    """Seed 003: SIGKILL to the whole tree; 204 once it is gone (a managed process: for good)."""
    found = await addressing.target(request)
    record, pid = found.record, found.pid
    supervisor = supervisor_of(request)
    try:
        if record is not None and (record.state is not State.IDLE if record.managed is not None
                                   else record.state in ACTIVE and supervisor.is_live_leader(record)):
            await supervisor.force_kill(record.id)
        elif record is None and pid is not None and pids.allow_unmanaged(request):
            if not await supervisor.signal_unmanaged(pid, signal.SIGKILL, grace=0):
                return wire.error(500, f"process {pid} did not exit", "kill_failed")
        else:
            return wire.error(404, f"process {found.shown} not found", "not_found")
    except ProcessLookupError:
        return wire.error(404, f"process {found.shown} not found", "not_found")
    except OSError as exc:
        return wire.error(500, f"failed to kill process {found.shown}: {exc.strerror or exc}",
                          "kill_failed")
    return web.Response(status=204)


@routes.post("/api/v1/processes/{pid}/restart")
async def restart(request: web.Request) -> web.Response:
    """Restart a managed process now (see the module docstring); its body is ignored."""
    record = await wire.record_for(request)
    supervisor = supervisor_of(request)
    shown = request.match_info["pid"]
    if record.managed is None:
        raise Conflict(f"process {shown} is not a managed process (it was started without name, "
                       "restart or health_check)", code="not_managed")
    try:
        record = await supervisor.restart(record.id)
    except Conflict as exc:
        raise Conflict(f"process {shown} cannot be restarted: {exc.message}", code="not_running") from None
    return json_response(wire.rendered(supervisor, record))


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
    """Seed 003's Send Signal: a signal number, to the process running under that pid (a
    managed process's current run)."""
    ref = addressing.ref_of(request)
    body = await parse.json_object(request, required=True)
    supervisor = supervisor_of(request)
    value = parse.integral(body.get("signal"))   # JSON's 15.0 is the integer 15
    try:
        number = parse.signal(value, supervisor.signal_number, names=False)
    except BadRequest:
        return wire.error(400, f"invalid signal {value!r}: must be a signal number", "invalid_signal")
    found = await addressing.target(request, ref)
    record, shown = found.record, found.shown
    try:
        if record is not None and record.state is State.RUNNING and supervisor.is_live_leader(record):
            await supervisor.send_signal(record.id, number)
        elif record is None and found.pid is not None and pids.allow_unmanaged(request):
            await supervisor.signal_unmanaged(found.pid, number)
        elif record is None:
            return wire.error(404, f"process {shown} not found", "not_found")
        else:
            return wire.error(400, f"process {shown} is not running", "not_running")
    except Conflict:
        return wire.error(400, f"process {shown} is not running", "not_running")
    except ProcessLookupError:
        return wire.error(404, f"process {shown} not found", "not_found")
    except OSError as exc:
        return wire.error(500, f"failed to signal process {shown}: {exc.strerror or exc}", "signal_failed")
    return json_response({"success": True})
