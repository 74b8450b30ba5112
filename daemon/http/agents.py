"""Routes built for agent runtimes (issue 20): exec-then-poll and leases.

``POST /processes/{id}/poll`` answers with the output a consumer has not seen yet
once the process has ended or ``yieldMs`` has passed; ``POST /processes`` takes
the same ``yieldMs``/``maxBytes``/``consumer`` and then answers with the record
and a ``poll`` (:func:`poll_options`, used by routes.py). ``POST
/processes/{id}/lease`` renews a lease. The decisions are in
daemon/supervisor/polling.py and leases.py; these handlers only parse.

A poll's default consumer is the caller's identity as the edge established it
(the token, the Unix peer's uid, or the TCP peer's address): one cursor per
caller. A named ``consumer`` (1 to 128 of ``A-Z a-z 0-9 . _ : @ -``) has its
own; the default ones are kept under ``caller/<identity>``, which no name can
spell (``/`` is not allowed in one).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..supervisor.polling import Poll
from . import parse, pids, streaming
from .interact import MAX_STDIN_BYTES
from .jsonio import json_response
from .keys import supervisor_of
from .middlewares import CALLER

routes = web.RouteTableDef()

POLL_FIELDS = frozenset({"yieldMs", "maxBytes", "consumer"})
MIN_YIELD_MS, MAX_YIELD_MS, DEFAULT_YIELD_MS = 250, 30_000, 1000
MIN_BYTES, MAX_BYTES, DEFAULT_BYTES = 256, 1024 * 1024, 16 * 1024
MIN_LEASE, MAX_LEASE = 1.0, 86400.0
_CONSUMER = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


@dataclasses.dataclass(slots=True, frozen=True)
class PollOptions:
    consumer: str
    wait: float        # seconds
    max_bytes: int


def _whole(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = parse.integral(body.get(field, default))
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{field}' must be an integer from {low} to {high}")
    return value


def poll_options(request: web.Request, body: dict[str, Any]) -> PollOptions:
    """``yieldMs``, ``maxBytes`` and ``consumer`` of a poll (or of a start that polls)."""
    consumer = body.get("consumer")
    if consumer is None:
        consumer = f"caller/{request.get(CALLER, 'anonymous')}"
    elif not isinstance(consumer, str) or not _CONSUMER.fullmatch(consumer):
        raise BadRequest("'consumer' must be 1 to 128 of the characters A-Z a-z 0-9 . _ : @ -")
    wait = _whole(body, "yieldMs", DEFAULT_YIELD_MS, MIN_YIELD_MS, MAX_YIELD_MS) / 1000
    return PollOptions(consumer, wait, _whole(body, "maxBytes", DEFAULT_BYTES, MIN_BYTES, MAX_BYTES))


async def poll(request: web.Request, process_id: int, options: PollOptions,
               data: bytes = b"") -> Poll:
    """Run one poll; during a shutdown it answers 503 unless the shutdown ends the process
    (then it waits for that end), as ``/wait`` does (streaming.unless_closing)."""
    supervisor = supervisor_of(request)
    return await streaming.unless_closing(supervisor, supervisor.poll(
        process_id, options.consumer, wait=options.wait, max_bytes=options.max_bytes, data=data),
        process_id)


@routes.post("/processes/{id}/poll")
async def poll_process(request: web.Request) -> web.Response:
    """Exec-then-poll: write ``input``, wait for the exit or ``yieldMs``, answer with the new
    output (daemon/supervisor/polling.py)."""
    process_id = await pids.process_id(request)
    body = await parse.json_object(request)
    unknown = sorted(set(body) - POLL_FIELDS - {"input"})
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'")
    options = poll_options(request, body)
    text = body.get("input")
    data = b"" if text is None else parse.string(text, "input", allow_empty=True).encode()
    if len(data) > MAX_STDIN_BYTES:
        raise BadRequest(f"'input' must be at most {MAX_STDIN_BYTES} bytes")
    return json_response((await poll(request, process_id, options, data)).to_json())


def lease_seconds(value: Any, field: str = "lease") -> float:
    """A lease's length: seconds, 1 to 86400."""
    return parse.number(value, field, minimum=MIN_LEASE, maximum=MAX_LEASE)


@routes.post("/processes/{id}/lease")
async def renew_lease(request: web.Request) -> web.Response:
    """Renew a process's lease for its length (or ``seconds``, which becomes its length)."""
    process_id = await pids.process_id(request)
    body = await parse.json_object(request)
    unknown = sorted(set(body) - {"seconds"})
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'")
    seconds = body.get("seconds")
    record = await supervisor_of(request).renew_lease(
        process_id, None if seconds is None else lease_seconds(seconds, "seconds"))
    return json_response(record.to_json())
