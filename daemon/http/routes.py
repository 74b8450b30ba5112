"""Native API routes (Cyrnel's paths): start, list, get, kill, wait, health.

Handlers only parse, call the supervisor, and render records as camelCase JSON.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..managed import check_name, spec_from_wire
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..model import ExitState, StartSpec, State
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
    process_id = await pids.process_id(request, unknown_is_bad_id=True)
    await parse.json_object(request)  # the payload is ignored; only object-ness is validated
    record = await supervisor_of(request).stop(process_id)
    return json_response(record.to_json())


@routes.get("/processes/{id}/wait")
async def wait_process(request: web.Request) -> web.Response:
    """Long poll; 503 once the daemon begins to shut down, unless its shutdown ends this
    process (then the idle record, as usual): see streaming.py."""
    process_id = await pids.process_id(request)
    timeout = parse.query_number(request, "timeout", DEFAULT_WAIT, maximum=MAX_WAIT)
    supervisor = supervisor_of(request)
    waiting = supervisor.wait(process_id, timeout)
    record, done = await (streaming.unless_closing(supervisor, waiting, process_id)
                          if supervisor.is_active(process_id) else waiting)
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
