"""Tensorlake's ``POST /api/v1/processes/run``: start, stream the output, report the exit.

Decisions where Tensorlake's documents are silent: a program that cannot start
still gets a stream: ``started`` (pid null), then ``exit`` with ``reason:
"failed"`` and the error. A run with a ``timeout`` keeps it if its client goes
away; a run without one is stopped (SIGTERM, grace, SIGKILL) when its client
goes away, so nothing runs unattended (the supervisor's ``abandon``). On timeout
the whole tree gets SIGKILL at once. When the daemon shuts down, a run ends with
its process under ``shutdown = "stop"`` (``exit`` as usual); under ``"detach"``
the stream ends at once with ``event: shutdown`` and the process goes on, like
every other child (see :mod:`..streaming`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...errors import ApiError, BadRequest
from ...model import ExitState, Process
from .. import parse, streaming
from ..keys import supervisor_of
from . import wire
from .output import POLL, follow_lines, output_events

routes = web.RouteTableDef()
MAX_RUN_TIMEOUT = 366 * 86400.0


@routes.post("/api/v1/processes/run")
async def run(request: web.Request) -> web.StreamResponse:
    """Run to completion in one streaming request: started, output..., exit."""
    body = await wire.start_body(request)
    timeout = body.get("timeout")
    if timeout is not None:
        try:
            timeout = parse.number(timeout, "timeout", maximum=MAX_RUN_TIMEOUT, allow_zero=False)
        except ApiError as exc:
            raise BadRequest(exc.message, code="invalid_request") from None
    if "stdin_mode" in body:
        raise BadRequest("a run's stdin is always closed: 'stdin_mode' is not accepted",
                         code="invalid_request")
    spec = wire.spec(body, allow_pipe=False, extra=frozenset({"timeout"}))
    spec.timeout, spec.grace = timeout, (0.0 if timeout is not None else None)
    supervisor = supervisor_of(request)
    record, _ = await supervisor.create(spec)
    response = streaming.event_stream()
    try:
        await response.prepare(request)
        started = wire.ms(record.started_at) or wire.now_ms()
        await response.write(streaming.event("started", {"handle": record.id, "pid": wire.pid_of(record),
                                                         "started_at": started}))
        rounds = streaming.Follow(request, supervisor, record.id, POLL)
        async for stream, batch in follow_lines(rounds, ("stdout", "stderr")):
            await response.write(output_events(stream, batch))
        if rounds.shutdown:   # the daemon stops and leaves the run running (shutdown = detach)
            await response.write(streaming.shutdown_event())
        else:
            final = await supervisor.get(record.id)
            await response.write(streaming.event("exit", _exit_event(final)))
        await response.write_eof()
    except asyncio.CancelledError:
        await supervisor.abandon(record.id)
        raise
    except ConnectionError:
        await supervisor.abandon(record.id)
        if not streaming.client_gone(request):
            raise
    return response


def _exit_event(record: Process) -> dict[str, Any]:
    signal_number = wire.signal_number(record.exit_signal)
    if record.exit_state is ExitState.TIMEOUT:
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
