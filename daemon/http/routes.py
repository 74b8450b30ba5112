"""Native API routes (Cyrnel's paths): start, list, get, kill, wait, health, and the bulk stop.

Handlers only parse, call the supervisor, and render records as camelCase JSON.

Issue 21 adds two ways to stop without a second request for the wait:

* ``POST /processes/{id}/signals/kill?wait=S`` (0 < S <= 3600) stops as the plain kill
  does, then answers as ``GET /processes/{id}/wait?timeout=S`` would: 200 with the idle
  record once the whole tree is gone, 408 with the record as it is when S runs out (the
  stop goes on). Without ``wait`` the route is seed 004's, answers unchanged; with it
  the kill's own answers come first (400, 404, 409 for a record already idle or
  terminating: ``wait`` waits for the stop this request makes, not for another's).
* ``POST /processes/stop`` ``{"ids": [...]}`` | ``{"ref": R}`` | ``{"state": "running" |
  "queued"}`` (exactly one; ``grace`` optional) stops every match at once and answers
  200 ``{"processes": [...]}`` once all are idle (supervisor/bulk.py has the rules: an
  empty list when nothing matches, a 404 naming the first unknown id before anything is
  stopped, idle ids as they are; 408 with the records as they are in the rare case a
  tree outlives its SIGKILL). The path cannot clash with ``/processes/{id}``: that
  resource has GET and DELETE only, and aiohttp tries the plain path first and falls
  through to it on other methods, so a process named "stop" is still read and deleted
  by name; no route takes POST on ``/processes/{id}``.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..managed import check_name, spec_from_wire
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..model import ExitState, Process, StartSpec, State
from ..supervisor import Supervisor
from ..supervisor.bulk import MAX_IDS
from . import agents, parse, pids, streaming, terminal
from .jsonio import json_response
from .keys import supervisor_of
from .openapi import document as openapi_document

routes = web.RouteTableDef()

START_FIELDS = frozenset({"argv", "command", "env", "cwd", "ref", "timeout", "grace", "stdin",
                          "name", "restart", "healthCheck", "ready", "tty", "lease", "plainEnv"})
MAX_TIMEOUT = 366 * 86400.0
MAX_GRACE = 86400.0
MAX_WAIT = 3600.0
DEFAULT_WAIT = 30.0
MAX_LIST = 1000
STOP_FIELDS = frozenset({"ids", "ref", "state", "grace"})
STOP_STATES = {State.RUNNING.value: State.RUNNING, State.QUEUED.value: State.QUEUED}
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def start_spec(body: dict[str, Any]) -> StartSpec:
    """Validate a POST /processes body into a StartSpec; BadRequest names the field."""
    unknown = sorted(set(body) - START_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'")
    has_argv, has_command = "argv" in body, "command" in body
    if has_argv == has_command:
        raise BadRequest("exactly one of 'argv' or 'command' is required")
    command = None
    if has_argv:
        argv = body["argv"]
        if not isinstance(argv, list) or not argv:
            raise BadRequest("'argv' must be a non-empty array of strings")
        argv = [parse.string(item, "argv", allow_empty=index > 0) for index, item in enumerate(argv)]
    else:
        command = parse.string(body["command"], "command")
        argv = ["/bin/sh", "-c", command]
    env = parse.env_map(body.get("env"))
    cwd = parse.absolute_path(body.get("cwd"), "cwd")
    ref = body.get("ref")
    if ref is not None:
        ref = parse.string(ref, "ref", max_length=1024)
    timeout = body.get("timeout")
    if timeout is not None:
        timeout = parse.number(timeout, "timeout", maximum=MAX_TIMEOUT, allow_zero=False)
    grace = body.get("grace")
    if grace is not None:
        grace = parse.number(grace, "grace", maximum=MAX_GRACE)
    stdin = body.get("stdin")
    stdin = "null" if stdin is None else stdin
    if stdin not in ("null", "pipe"):
        raise BadRequest("'stdin' must be \"null\" or \"pipe\"")
    name = body.get("name")
    try:
        name = None if name is None else check_name(name)
        managed = spec_from_wire(body, camel=True)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    tty = terminal.window_size(body["tty"], "tty") if body.get("tty") is not None else None
    if tty is not None:
        stdin = "pipe"   # the terminal is its stdin (and stdout and stderr)
    lease = agents.lease_seconds(body["lease"]) if body.get("lease") is not None else None
    plain_env = body.get("plainEnv", True)
    if not isinstance(plain_env, bool):
        raise BadRequest("'plainEnv' must be a boolean")
    return StartSpec(argv=argv, command=command, env=env, cwd=cwd, ref=ref,
                     timeout=timeout, grace=grace, stdin=stdin, name=name, managed=managed,
                     tty=tty, lease=lease, plain_env=plain_env)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


@routes.post("/processes")
async def create_process(request: web.Request) -> web.Response:
    """Start a process; with ``yieldMs``/``maxBytes``/``consumer`` also poll it once (agents.py)
    and answer with the record as that poll left it, plus ``poll``."""
    body = await parse.json_object(request, required=True)
    polling = agents.POLL_FIELDS & body.keys()
    options = agents.poll_options(request, body) if polling else None
    spec = start_spec({k: v for k, v in body.items() if k not in polling})
    record, created = await supervisor_of(request).create(spec, _idempotency_key(request))
    status = 201 if created else 200
    if options is None:
        return json_response(record.to_json(), status=status)
    result = await agents.poll(request, record.id, options)
    return json_response(result.record.to_json() | {"poll": result.to_json()}, status=status)


def stop_selector(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a POST /processes/stop body into Supervisor.stop_many's keywords (a null
    selector counts as absent); BadRequest names the field."""
    unknown = sorted(set(body) - STOP_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'")
    given = [key for key in ("ids", "ref", "state") if body.get(key) is not None]
    if len(given) != 1:
        raise BadRequest("exactly one of 'ids', 'ref' or 'state' is required")
    grace = body.get("grace")
    selector: dict[str, Any] = {
        "grace": None if grace is None else parse.number(grace, "grace", maximum=MAX_GRACE)}
    if given == ["ids"]:
        ids = body["ids"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
            raise BadRequest(f"'ids' must be an array of 1 to {MAX_IDS} process ids")
        for index, value in enumerate(ids):
            value = ids[index] = parse.integral(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= parse.MAX_ID:
                raise BadRequest(f"'ids[{index}]' must be a process id: an integer from 1 to "
                                 f"{parse.MAX_ID}")
        selector["ids"] = ids
    elif given == ["ref"]:
        selector["ref"] = parse.string(body["ref"], "ref", max_length=1024)
    else:
        state = STOP_STATES.get(body["state"]) if isinstance(body["state"], str) else None
        if state is None:
            raise BadRequest("'state' must be \"running\" or \"queued\"")
        selector["state"] = state
    return selector


@routes.post("/processes/stop")
async def stop_processes(request: web.Request) -> web.Response:
    """The bulk stop (issue 21; see the module docstring and supervisor/bulk.py)."""
    selector = stop_selector(await parse.json_object(request, required=True))
    supervisor = supervisor_of(request)
    records, done = await streaming.unless_closing(supervisor, supervisor.stop_many(**selector))
    return json_response({"processes": [record.to_json() for record in records]},
                         status=200 if done else 408)


def _enum_query(request: web.Request, name: str, enum: type[State] | type[ExitState]) -> Any:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return enum(text)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise BadRequest(f"query parameter '{name}' must be one of {allowed}") from None


@routes.get("/processes")
async def list_processes(request: web.Request) -> web.Response:
    limit_text = request.query.get("limit")
    limit = 100 if limit_text is None else parse.positive_int(limit_text, "limit")
    if limit > MAX_LIST:
        raise BadRequest(f"query parameter 'limit' must be at most {MAX_LIST}")
    cursor_text = request.query.get("cursor")
    cursor = parse.positive_int(cursor_text, "cursor") if cursor_text is not None else None
    records = await supervisor_of(request).list(
        state=_enum_query(request, "state", State),
        exit_state=_enum_query(request, "exitState", ExitState),
        ref=request.query.get("ref") or None, name=request.query.get("name") or None,
        before_id=cursor, limit=limit + 1)
    more = len(records) > limit
    records = records[:limit]
    return json_response({"processes": [r.to_json() for r in records],
                          "next": str(records[-1].id) if more else None})


@routes.get("/processes/{id}")
async def get_process(request: web.Request) -> web.Response:
    record = await supervisor_of(request).get(await pids.process_id(request))
    return json_response(record.to_json())


@routes.get("/processes/{id}/runs")
async def list_runs(request: web.Request) -> web.Response:
    """A managed process's runs, oldest first."""
    runs = await supervisor_of(request).runs(await pids.process_id(request))
    return json_response({"runs": [{_CAMEL.get(k, k): v for k, v in run.items()} for run in runs]})


@routes.post("/processes/{id}/restart")
async def restart_process(request: web.Request) -> web.Response:
    """Stop a managed process's current run and start the next at once (the backoff reset)."""
    process_id = await pids.process_id(request)
    await parse.json_object(request)
    record = await supervisor_of(request).restart(process_id)
    return json_response(record.to_json())


_CAMEL = {"started_at": "startedAt", "ended_at": "endedAt", "exit_code": "exitCode",
          "exit_signal": "exitSignal"}


@routes.post("/processes/{id}/signals/kill")
async def kill_process(request: web.Request) -> web.Response:
    """Seed 004's kill; with ``?wait=S`` also the wait (see the module docstring)."""
    process_id = await pids.process_id(request, unknown_is_bad_id=True)
    await parse.json_object(request)  # the payload is ignored; only object-ness is validated
    wait = parse.query_number(request, "wait", None, maximum=MAX_WAIT, allow_zero=False)
    supervisor = supervisor_of(request)
    record = await supervisor.stop(process_id)
    if wait is None:
        return json_response(record.to_json())
    record, done = await _waited(supervisor, process_id, wait)
    return json_response(record.to_json(), status=200 if done else 408)


async def _waited(supervisor: Supervisor, process_id: int, timeout: float | None
                  ) -> tuple[Process, bool]:
    """The record once idle (True) or when ``timeout`` passed (False); 503 once the daemon
    begins to shut down, unless its shutdown ends this process: see streaming.py."""
    waiting = supervisor.wait(process_id, timeout)
    return await (streaming.unless_closing(supervisor, waiting, process_id)
                  if supervisor.is_active(process_id) else waiting)


@routes.get("/processes/{id}/wait")
async def wait_process(request: web.Request) -> web.Response:
    """Long poll; 503 once the daemon begins to shut down, unless its shutdown ends this
    process (then the idle record, as usual): see streaming.py."""
    process_id = await pids.process_id(request)
    timeout = parse.query_number(request, "timeout", DEFAULT_WAIT, maximum=MAX_WAIT)
    record, done = await _waited(supervisor_of(request), process_id, timeout)
    return json_response(record.to_json(), status=200 if done else 408)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    supervisor = supervisor_of(request)
    body = supervisor.metrics.render(supervisor.counts(), supervisor.queue_length,
                                     await supervisor.count())
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", **supervisor_of(request).counts()})
