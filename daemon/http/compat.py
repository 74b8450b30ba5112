"""Compatibility routes: the seed documents' kill routes, with their exact bodies and codes
(000, 001, 002; Tensorlake's, seed 003, are with the rest of its routes in tensorlake/).

They address processes by OS pid. A pid maps to the newest record that ran as
that pid, and only a record whose process is still running under it is acted
on; the action then goes through the supervisor like a native kill (the record
moves through ``terminating`` to ``idle``/``canceled``).

A pid Stablehand did not start is never signalled unless the operator set
``allow_unmanaged = true``: by default 001 answers 404, 000 its 400 failure
body, 002 403 if the process exists (404 if not), 003 404 (see pids.py).

Decisions where a document is silent:

* 001 / 000 (a Flask server): a pid that is not a positive integer is a 400
  (``{"error": "Invalid PID: ..."}``); ``force`` must be a boolean.
* 000: ``timeout`` must be a number of seconds in [0, 3600]; anything else is its
  400 failure body with an error saying why. The answer comes once the whole
  tree is gone (SIGTERM, ``timeout``, SIGKILL). If the daemon begins to shut
  down meanwhile and the shutdown will not end the process (``shutdown =
  "detach"``, or a process Stablehand did not start), the answer is the failure
  body at once, saying so (see streaming.py), rather than holding the shutdown.
* 002: every malformed body is ``{"error": "Invalid pid"}``, the one 400 text the
  document gives; SIGTERM only, never escalated (DELETE /api/v1/processes/{pid}
  or a forced 001 can still finish such a process).
"""

from __future__ import annotations

import signal
from typing import Any

from aiohttp import web

from ..errors import ApiError, Conflict, Unavailable
from ..model import now_iso
from . import parse, pids, streaming
from .jsonio import json_response
from .keys import supervisor_of

routes = web.RouteTableDef()

MAX_GRACEFUL_TIMEOUT = 3600.0


async def _body_or_none(request: web.Request) -> dict[str, Any] | None:
    """The body as an object; None if it is not one (the caller answers in its own words)."""
    try:
        return await parse.json_object(request)
    except ApiError:
        return None


# --- 001: reference-server, POST /api/processes/terminate/<int:pid> ---------------------

@routes.post("/api/processes/terminate/{pid}")
async def terminate(request: web.Request) -> web.Response:
    pid = pids.from_path(request)
    if pid is None:
        return json_response({"error": f"Invalid PID: {request.match_info['pid']}"}, status=400)
    supervisor = supervisor_of(request)
    record, running = await pids.running_record(supervisor, pid)
    not_found = json_response({"error": f"Process not found: PID {pid}"}, status=404)
    if record is not None and running is None:
        return json_response({"error": f"Process already terminated: PID {pid}"}, status=400)
    body = await _body_or_none(request)
    if body is None or not isinstance(body.get("force", False), bool):
        return json_response({"error": "'force' must be a boolean"}, status=400)
    sig = signal.SIGKILL if body.get("force", False) else signal.SIGTERM
    try:
        if record is None:
            if not pids.allow_unmanaged(request):
                return not_found
            await supervisor.signal_unmanaged(pid, sig)
        else:
            await supervisor.stop(record.id, sig=sig, grace=0 if sig == signal.SIGKILL else None)
    except Conflict:
        return json_response({"error": f"Process already terminated: PID {pid}"}, status=400)
    except ProcessLookupError:
        return not_found
    except OSError as exc:
        return json_response({"error": f"Failed to terminate process: {exc.strerror or exc}"},
                             status=500)
    return json_response({"success": True, "pid": pid, "status": "terminated",
                          "message": "Process terminated successfully", "timestamp": now_iso()})


# --- 000: reference-server, POST /api/process/terminate-gracefully/<int:pid> ------------

@routes.post("/api/process/terminate-gracefully/{pid}")
async def terminate_gracefully(request: web.Request) -> web.Response:
    pid = pids.from_path(request)
    if pid is None:
        return json_response({"error": f"Invalid PID: {request.match_info['pid']}"}, status=400)

    def failed(error: str | None = None) -> web.Response:
        return json_response({"success": False,
                              "error": error or f"Failed to terminate process {pid}",
                              "pid": pid, "timestamp": now_iso()}, status=400)

    body = await _body_or_none(request)
    if body is None:
        return failed("Invalid request body: must be a JSON object")
    timeout = body.get("timeout", 30)
    try:
        timeout = parse.number(timeout, "timeout", maximum=MAX_GRACEFUL_TIMEOUT)
    except ApiError:
        return failed(f"Invalid timeout: must be a number of seconds from 0 to {MAX_GRACEFUL_TIMEOUT:g}")
    supervisor = supervisor_of(request)
    record, running = await pids.running_record(supervisor, pid)
    try:
        if record is None and pids.allow_unmanaged(request):
            gone = await streaming.unless_closing(
                supervisor, supervisor.signal_unmanaged(pid, signal.SIGTERM, grace=timeout))
        elif running is None:
            return failed()
        else:
            _, gone = await streaming.unless_closing(
                supervisor, supervisor.terminate(running.id, timeout), running.id)
    except Unavailable:
        return failed(f"{streaming.SHUTTING_DOWN}: process {pid} was sent SIGTERM; "
                      "its end was not waited for")
    except (Conflict, OSError):
        return failed()
    if not gone:
        return failed()
    return json_response({"success": True, "message": f"Process {pid} terminated successfully",
                          "pid": pid, "timestamp": now_iso()})


# --- 002: psys, POST /api/connections/kill ------------------------------------------------

def _psys_pid(body: dict[str, Any] | None) -> int | None:
    raw = None if body is None else body.get("pid")
    if isinstance(raw, bool):
        return None
    raw = parse.integral(raw)
    if isinstance(raw, str):
        return parse.os_pid(raw)  # bounded before int(): 5000 digits are "Invalid pid", not a 500
    if isinstance(raw, int) and 0 < raw <= parse.MAX_PID:
        return raw
    return None


@routes.post("/api/connections/kill")
async def psys_kill(request: web.Request) -> web.Response:
    pid = _psys_pid(await _body_or_none(request))
    if pid is None:
        return json_response({"error": "Invalid pid"}, status=400)
    supervisor = supervisor_of(request)
    record = await supervisor.record_for_pid(pid)
    try:
        if record is not None and supervisor.is_live_leader(record):
            try:
                await supervisor.stop(record.id, sig=signal.SIGTERM, escalate=False)
            except Conflict:  # already being stopped: deliver the SIGTERM all the same
                await supervisor.send_signal(record.id, signal.SIGTERM, terminating_ok=True)
        elif pids.allow_unmanaged(request) and record is None:
            await supervisor.signal_unmanaged(pid, signal.SIGTERM)
        elif supervisor.pid_exists(pid):
            return json_response({"error": "Permission denied"}, status=403)
        else:
            return json_response({"error": "Process not found"}, status=404)
    except ProcessLookupError:
        return json_response({"error": "Process not found"}, status=404)
    except PermissionError:
        return json_response({"error": "Permission denied"}, status=403)
    except (OSError, ApiError):
        return json_response({"error": "Failed to kill process"}, status=500)
    return json_response({"ok": True})
