"""Tensorlake's wire format on Stablehand's records: the record, errors, start bodies, pids.

Timestamps are integer milliseconds since the Unix epoch; ``status`` is
``running`` | ``exited`` | ``signaled`` (a queued record shows as ``running``
with ``pid`` null); errors are ``{"error", "code"}``.
"""

from __future__ import annotations

import signal as signal_module
import time
from typing import Any

from aiohttp import web

from ...errors import BadRequest, NotFound
from ...model import Process, StartSpec, State, iso_to_epoch
from ...supervisor import Supervisor
from .. import parse
from ..jsonio import json_response
from ..keys import supervisor_of

START_FIELDS = frozenset({"command", "args", "env", "working_dir", "stdin_mode", "stdout_mode",
                          "stderr_mode"})


def ms(iso: str | None) -> int | None:
    epoch = iso_to_epoch(iso)
    return None if epoch is None else int(epoch * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


def signal_number(name: str | None) -> int | None:
    """The number of a signal the registry names (``"SIGTERM"``), None for none."""
    if not name:
        return None
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        return None


def error(status: int, message: str, code: str) -> web.Response:
    """An error answered in Tensorlake's words (where the edge's rendering would not do)."""
    return json_response({"error": message, "code": code}, status=status)


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
        "signal": signal_number(record.exit_signal),
        "stdin_writable": stdin_writable,
        "command": record.argv[0],
        "args": record.argv[1:],
        "started_at": ms(record.started_at),
        "ended_at": ms(record.completed_at),
    }


def rendered(supervisor: Supervisor, record: Process) -> dict[str, Any]:
    """``record`` as Tensorlake shows it, with whether its stdin is open now."""
    return tensorlake_record(record, supervisor.stdin_open(record.id))


def spec(body: dict[str, Any], *, allow_pipe: bool = True, extra: frozenset[str] = frozenset()) -> StartSpec:
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


async def start_body(request: web.Request) -> dict[str, Any]:
    """The JSON object a start or run sends; a malformed one is invalid_request too."""
    try:
        return await parse.json_object(request, required=True)
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None


async def record_for(request: web.Request) -> Process:
    """The record the path's ``{pid}`` names (the newest that ran as it): 400 invalid_pid,
    404 not_found."""
    text = request.match_info["pid"]
    pid = parse.os_pid(text)
    if pid is None:
        raise BadRequest(f"invalid pid {text!r}", code="invalid_pid")
    record = await supervisor_of(request).record_for_pid(pid)
    if record is None:
        raise NotFound(f"process {text} not found", code="not_found")
    return record
