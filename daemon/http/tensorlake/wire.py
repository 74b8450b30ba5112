"""Tensorlake's wire format on Stablehand's records: ``ProcessInfo``, errors, start bodies.

Timestamps are integer milliseconds since the Unix epoch; ``status`` is
``running`` | ``exited`` | ``signaled``; errors are ``{"error", "code"}``.

Tensorlake's SDKs (Python and TypeScript wrap its Rust core) parse every answer
into the Rust ``ProcessInfo``, so a field it requires is never null here:

* ``pid`` is 0 for a record not started yet (queued: it has no pid); 0 is no
  process, and addresses none (a 404).
* ``started_at`` is the creation time for such a record.

Managed processes (Tensorlake's PR #730): a start with ``name``, ``restart`` or
``health_check`` (:mod:`.managed_start`) is managed; the record gains
``managed`` (:func:`managed_of`), absent for an unmanaged one. The top level
describes the current run (``pid`` is its pid); while a managed process waits
out its backoff, it describes the run that ended (``exited``/``signaled`` with
that run's exit), and the next run makes it ``running`` again under a new pid.

``user``: the sandbox's daemon runs commands as a chosen user; Stablehand runs
every child as its own user and switches to no other. A start may name that
user (by name or uid, e.g. Tensorlake's own example ``"root"`` when the daemon is
root) or send null; any other user is refused, 403 ``forbidden`` (as a program
outside ``allowed_programs`` is), rather than a process silently running as
someone else. A ``user`` that is no name (not a string, or empty) is a 400.
"""

from __future__ import annotations

import functools
import os
import pwd
import signal as signal_module
import time
from typing import Any

from aiohttp import web

from ...errors import BadRequest, Forbidden
from ...managed import Status
from ...model import Process, StartSpec, State, iso_to_epoch
from ...supervisor import Supervisor
from .. import parse
from ..jsonio import json_response
from . import managed_start
from .addressing import record_for as record_for

START_FIELDS = frozenset({"command", "args", "env", "working_dir", "user", "stdin_mode", "stdout_mode",
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


def pid_of(record: Process) -> int:
    """The record's pid, 0 before it has one (Tensorlake's ``pid`` is never null)."""
    return record.pid or 0


def error(status: int, message: str, code: str) -> web.Response:
    """An error answered in Tensorlake's words (where the edge's rendering would not do)."""
    return json_response({"error": message, "code": code}, status=status)


def tensorlake_record(record: Process, stdin_writable: bool = False) -> dict[str, Any]:
    """``ProcessInfo``: the record (its current run, for a managed one) as Tensorlake shows it."""
    exit_code, exit_signal, ended_at = record.exit_code, record.exit_signal, record.completed_at
    if record.state is State.IDLE:
        status = "signaled" if record.exit_signal else "exited"
    else:
        status = "running"
        last = _ended_run(record)
        if last is not None:   # backing off: the run that ended
            exit_code, exit_signal, ended_at = last["exit_code"], last["exit_signal"], last["ended_at"]
            status = "signaled" if exit_signal else "exited"
    info: dict[str, Any] = {
        "pid": pid_of(record),
        "handle": record.id,
        "status": status,
        "exit_code": exit_code,
        "signal": signal_number(exit_signal),
        "stdin_writable": stdin_writable,
        "command": record.argv[0],
        "args": record.argv[1:],
        "started_at": ms(record.started_at or record.created_at),
        "ended_at": ms(ended_at),
    }
    managed = managed_of(record)
    if managed is not None:
        info["managed"] = managed
    return info


def managed_of(record: Process) -> dict[str, Any] | None:
    """``ProcessInfo.managed`` (Tensorlake's ``ProcessManagedInfo``); None when unmanaged.

    Every field the Rust struct requires is there with its type, every enum value
    is one of Tensorlake's. Decisions where Tensorlake's clients are silent:

    * ``id`` is the name, or ``handle-<handle>`` for an unnamed process: never all
      digits (it would read as a pid); like Tensorlake's opaque id it addresses
      nothing (an unnamed managed process is addressed by its pid).
    * ``status`` is ``stopped`` once the record is ended or being killed (for good);
      ``last_error`` is then the record's error if it has one (e.g. the restarts it
      gave up after).
    * ``health_check`` is null for a check Tensorlake has no type for (the native
      API's ``exec``); its ``path`` is null for a ``tcp`` check.
    * ``last_exit.oom_killed`` is false: Stablehand does not tell an OOM kill from
      another SIGKILL.
    * The native API's ``run`` and ``ready`` are not shown.
    """
    spec, state = record.managed, record.managed_state
    if spec is None or state is None:
        return None
    check = spec.health_check
    health = None if check is None or check.type not in ("http", "tcp") else {
        "type": check.type, "port": check.port, "path": check.path if check.type == "http" else None,
        "initial_delay_ms": check.initial_delay_ms, "interval_ms": check.interval_ms,
        "timeout_ms": check.timeout_ms, "failure_threshold": check.failure_threshold}
    last = state.last_exit
    ended_at = ms(last.get("ended_at")) if last else None
    over = record.state in (State.IDLE, State.TERMINATING)
    return {
        "id": record.name if record.name is not None else f"handle-{record.id}",
        "name": record.name,
        "status": "stopped" if over else state.status.value,
        "restart_count": state.restart_count,
        "restart": {"policy": spec.restart.policy.value, "max_restarts": spec.restart.max_restarts,
                    "initial_backoff_ms": spec.restart.initial_backoff_ms,
                    "max_backoff_ms": spec.restart.max_backoff_ms},
        "health_check": health,
        "health_status": state.health_status.value,
        "consecutive_health_failures": state.consecutive_health_failures,
        "last_exit": None if last is None or ended_at is None else {
            "exit_code": last.get("exit_code"), "signal": signal_number(last.get("exit_signal")),
            "oom_killed": False, "ended_at": ended_at},
        "last_error": record.error if over and record.error else state.last_error,
        "next_restart_at": None if over else ms(state.next_restart_at),
    }


def _ended_run(record: Process) -> dict[str, Any] | None:
    """The run a managed process's backoff follows (``last_exit``), None unless it backs off."""
    state = record.managed_state
    if record.state is not State.RUNNING or state is None or state.status is not Status.BACKING_OFF:
        return None
    return state.last_exit


def rendered(supervisor: Supervisor, record: Process) -> dict[str, Any]:
    """``record`` as Tensorlake shows it, with whether its stdin is open now."""
    return tensorlake_record(record, supervisor.stdin_open(record.id))


def spec(body: dict[str, Any], *, allow_pipe: bool = True, extra: frozenset[str] = frozenset(),
         managed: bool = False) -> StartSpec:
    """A start body as a StartSpec; every malformed field is a 400 with code invalid_request.

    ``managed``: the body may carry ``name``, ``restart`` and ``health_check``
    (``POST /api/v1/processes``; a run takes none of them).
    """
    try:
        return _checked_spec(body, allow_pipe=allow_pipe,
                             extra=extra | managed_start.FIELDS if managed else extra, managed=managed)
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None


def _checked_spec(body: dict[str, Any], *, allow_pipe: bool, extra: frozenset[str],
                  managed: bool) -> StartSpec:
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
    _check_user(body.get("user"))
    modes = {}
    for field, allowed in (("stdin_mode", ("closed", "pipe") if allow_pipe else ("closed",)),
                           ("stdout_mode", ("capture", "discard")),
                           ("stderr_mode", ("capture", "discard"))):
        value = body.get(field)
        value = allowed[0] if value is None else value
        if not isinstance(value, str) or value not in allowed:
            raise BadRequest(f"'{field}' must be one of {', '.join(allowed)}")
        modes[field] = value
    name, managed_spec = managed_start.start_fields(body) if managed else (None, None)
    return StartSpec(argv=[command, *args], env=env, cwd=cwd,
                     stdin="pipe" if modes["stdin_mode"] == "pipe" else "null",
                     stdout_mode=modes["stdout_mode"], stderr_mode=modes["stderr_mode"],
                     name=name, managed=managed_spec)


@functools.cache
def _own_user() -> tuple[str, ...]:
    """The names the daemon's user goes by: its uid, and its login name if it has one."""
    uid = os.geteuid()
    try:
        return (str(uid), pwd.getpwuid(uid).pw_name)
    except KeyError:   # a uid without a passwd entry (containers)
        return (str(uid),)


def _check_user(value: Any) -> None:
    """``user``: null, or the daemon's own user (see the module docstring)."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise BadRequest("'user' must be a user name")
    own = _own_user()
    if value not in own:
        raise Forbidden(f"'user' {parse.shown(value)}: processes run as the daemon's user "
                        f"({own[-1]}); switching to another user is not supported", code="forbidden")


async def start_body(request: web.Request) -> dict[str, Any]:
    """The JSON object a start or run sends; a malformed one is invalid_request too."""
    try:
        return await parse.json_object(request, required=True)
    except BadRequest as exc:
        raise BadRequest(exc.message, code="invalid_request") from None
