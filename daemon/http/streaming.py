"""Streaming responses: what a handler does when its connection ends early, the
server-sent-events framing, and the loop that follows a running process's output.

A client that goes away mid-stream (an SSE reader closing its tab, ``curl``
interrupted during a follow) is normal, not an error. aiohttp raises
``ClientConnectionResetError`` (a ConnectionResetError) at the handler's next
write; left to propagate, the edge middleware would log it as an unhandled
exception and aiohttp as "Error handling request", both with a traceback.
Streaming handlers catch ConnectionError and ask :func:`client_gone`.

Kept apart from :mod:`.connections` (the per-connection protocol) so that
handlers do not import the protocol layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web

from .jsonio import dumps_bytes

log = structlog.get_logger("stablehand.http")


def headers_only(request: web.BaseRequest) -> bool:
    """A HEAD request: a streaming handler prepares its response and writes no body (aiohttp
    drops the framing of a HEAD response but not the bytes a handler writes)."""
    return request.method == "HEAD"


async def begin(request: web.BaseRequest, response: web.StreamResponse) -> bool:
    """Prepare a streaming response; False for a HEAD request, whose response is then
    complete (headers only) and the handler returns it as it is."""
    await response.prepare(request)
    if headers_only(request):
        await response.write_eof()
        return False
    return True


def gone(request: web.BaseRequest) -> bool:
    """Whether the request's connection is closed or closing (its client left)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def client_gone(request: web.BaseRequest) -> bool:
    """Whether a ConnectionError just raised in a streaming handler means its client left.

    aiohttp raises ``ClientConnectionResetError`` (a ConnectionResetError) when
    a handler writes to a connection that is closing or gone. If that is the
    case, this logs ``http.client_gone`` at debug and returns True: the handler
    should return its (already prepared) response, and aiohttp then ends the
    request quietly. Otherwise the error came from something else and the
    handler must re-raise it.
    """
    if not gone(request):
        return False
    log.debug("http.client_gone", method=request.method, path=request.path)
    return True


def cut_short(request: web.BaseRequest, reason: str) -> None:
    """Close a response's connection before its promised body is complete, so the client
    sees a short body (an error) rather than wrong bytes. Logged as ``http.cut_short``."""
    log.info("http.cut_short", method=request.method, path=request.path, reason=reason)
    request.protocol.force_close()


# --- server-sent events -------------------------------------------------------------------

def event_stream() -> web.StreamResponse:
    """An SSE response, to prepare inside the handler's ``try`` (the client may be gone)."""
    return web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})


def event(name: str, data: Any, event_id: int | None = None) -> bytes:
    """One event: ``id:`` (when given), ``event:`` and ``data:`` as compact JSON, then a blank line."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + name.encode() + b"\ndata: " + dumps_bytes(data) + b"\n\n"


# --- following a process ------------------------------------------------------------------

async def follow(request: web.BaseRequest, active: Callable[[], bool],
                 poll: float) -> AsyncIterator[bool]:
    """The rounds of a follow: read all that is there now at each, until the process is done.

    Each round yields whether the process was still active *before* the caller
    reads: looking before reading means the bytes written just before it ended
    are read in the last round (``False``), after which the loop ends. Between
    rounds it sleeps ``poll`` seconds. Raises ConnectionResetError once the
    client has gone away, even while the process prints nothing (a write would
    never tell).
    """
    while True:
        if gone(request):
            raise ConnectionResetError("the client went away")
        still = active()
        yield still
        if not still:
            return
        await asyncio.sleep(poll)
