"""Streaming responses: what a handler does when its connection ends early, the
server-sent-events framing, and the loop that follows a running process's output.

A client that goes away mid-stream (an SSE reader closing its tab, ``curl``
interrupted during a follow) is normal, not an error. aiohttp raises
``ClientConnectionResetError`` (a ConnectionResetError) at the handler's next
write; left to propagate, the edge middleware would log it as an unhandled
exception and aiohttp as "Error handling request", both with a traceback.
Streaming handlers catch ConnectionError and ask :func:`client_gone`.

Shutdown. Every long-lived answer (a follow, an SSE stream, a run, a long
poll) ends on its own once the daemon begins to shut down
(``Supervisor.closing``), instead of holding the daemon's exit until aiohttp's
``shutdown_timeout`` passes and cancels it. The rule: an answer about one
process that this shutdown ends (``shutdown = "stop"`` and the process running
or terminating) goes on until that process ends, as it would have (the daemon
waits for the process anyway, and the client gets its last output and its
end); every other one ends within one poll of ``closing``: a followed byte
stream with its final chunk, an SSE stream with ``event: shutdown``
(``{"reason": "the daemon is shutting down"}``), a long poll with 503.

Kept apart from :mod:`.connections` (the per-connection protocol) so that
handlers do not import the protocol layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web

from ..errors import ApiError, Unavailable
from ..model import ACTIVE
from .jsonio import dumps_bytes

if TYPE_CHECKING:
    from ..supervisor import Supervisor

log = structlog.get_logger("stablehand.http")
SHUTTING_DOWN = "the daemon is shutting down"
_T = TypeVar("_T")


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

class Follow:
    """The rounds of a follow: read all that is there now at each, until the process is done
    or, when the daemon shuts down, until the shutdown rule (module doc) ends it.

    Each round (``async for active in follow.rounds()``) yields whether more may
    come *before* the caller reads: looking before reading means the bytes
    written just before the end are read in the last round (``False``), after
    which the loop ends. Between rounds it sleeps ``poll`` seconds. Afterwards
    :attr:`shutdown` says whether the daemon's shutdown ended it (the process
    goes on). Raises ConnectionResetError once the client has gone away, even
    while the process prints nothing (a write would never tell).
    """

    def __init__(self, request: web.BaseRequest, supervisor: Supervisor, process_id: int,
                 poll: float) -> None:
        self.request, self.supervisor, self.process_id, self.poll = request, supervisor, process_id, poll
        self.shutdown = False

    async def rounds(self) -> AsyncIterator[bool]:
        outlives: bool | None = None   # whether the process outlives this shutdown (asked once)
        while True:
            if gone(self.request):
                raise ConnectionResetError("the client went away")
            still = self.supervisor.is_active(self.process_id)
            if still:
                self.supervisor.keep_alive(self.process_id)   # an open stream renews a lease
            if still and self.supervisor.closing.is_set():
                if outlives is None:
                    outlives = not await ends_with_shutdown(self.supervisor, self.process_id)
                if outlives:
                    still, self.shutdown = False, True
            yield still
            if not still:
                return
            await asyncio.sleep(self.poll)


async def ends_with_shutdown(supervisor: Supervisor, process_id: int) -> bool:
    """Whether the shutdown under way ends this process: with ``shutdown = "stop"`` it stops
    every running (and finishes every terminating) child; a queued one stays queued, and
    with ``"detach"`` every child goes on."""
    if supervisor.config.shutdown != "stop":
        return False
    try:
        record = await supervisor.get(process_id)
    except ApiError:
        return False
    return record.state in ACTIVE


async def unless_closing(supervisor: Supervisor, work: Awaitable[_T], process_id: int | None = None) -> _T:
    """``work``'s result, or Unavailable (503) once the daemon begins to shut down, unless
    ``process_id`` is given and the shutdown ends that process (then ``work`` goes on: it
    waits for that end).

    For the long waits of the API (``/wait``, a graceful terminate): ``work`` is
    cancelled when it is given up, which only drops the waiting (the stop or
    signal it waits for was made before).
    """
    task = asyncio.ensure_future(work)
    closing = asyncio.ensure_future(supervisor.closing.wait())
    try:
        await asyncio.wait((task, closing), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and (process_id is None
                                or not await ends_with_shutdown(supervisor, process_id)):
            raise Unavailable(SHUTTING_DOWN)
        return await task
    finally:
        closing.cancel()
        if not task.done():
            task.cancel()


def shutdown_event() -> bytes:
    """The event an SSE stream ends with when the daemon's shutdown ends it."""
    return event("shutdown", {"reason": SHUTTING_DOWN})


def closing_now(supervisor: Supervisor) -> asyncio.Future[Any]:
    """A future done once the daemon begins to shut down (for a stream that waits on
    something else too); cancel it when done with it."""
    return asyncio.ensure_future(supervisor.closing.wait())
