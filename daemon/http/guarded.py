"""One connection's protocol: a header deadline, a place in a budget, stalls cut.

:mod:`.connections` builds the listeners; this module is what each accepted
connection runs. :class:`GuardedHandler` is aiohttp's ``RequestHandler``
(through :class:`~.protocol_errors.JsonErrorHandler`, so malformed requests
still get the JSON envelope) with three additions, since aiohttp has no deadline
for receiving a request's headers and its keep-alive timer does not stop a
client that trickles them (slowloris):

* **Header deadline** (``header_timeout``, 10 s by default): a timer armed when
  the connection opens and again when the first byte of a new request arrives
  on a kept-alive connection, disarmed the moment aiohttp's parser has the
  request line and all the headers. A client that has not finished them by then
  gets ``408 {"error": ..., "code": "timeout"}`` (or, if it sent nothing at all,
  just the close) and the connection is closed; logged at debug as
  ``http.header_timeout``. The deadline does not cover the body nor, above all,
  the response: an SSE stream or a follow runs for as long as it likes.
  Bytes arriving while a request is being answered (its body, or the next
  pipelined request) do not arm it; the next request's bytes after that do.
* **Idle keep-alive timeout** (``keepalive_timeout``, 75 s): aiohttp's own
  ``keepalive_timeout``. Its timer closes a connection only while no request is
  being handled, so streaming responses are exempt by construction.
* **A place in a :class:`Budget`** (one per kind of listener). When a budget is
  full, a new connection takes the place of the connection that has been *idle*
  longest (waiting for its first request or kept alive between requests), which
  is closed: a flood of idle connections cannot lock real clients out, since
  each of them sends its request at once and is then busy, never the longest
  idle. Only when every connection is busy (answering a request, or streaming)
  is the new one answered ``503 {"error": ..., "code": "unavailable"}`` with
  ``Connection: close`` at once, before it sends anything, and closed: it holds
  its file descriptor for one turn of the loop. A streaming response counts
  against the cap for as long as it is open. ``http.connections_full`` is
  logged at warning at most once every 10 s per budget, with how many idle
  connections were closed and how many new ones refused since the last one.

**Stalled connections** (issue F2): a client can pipeline thousands of requests
and never read the answers, so its handler waits forever for its writes to
drain and the connection looks busy. A connection whose transport has paused
writing (``pause_writing``: the kernel and transport buffers are full because
the client is not reading) counts as *stalled*: it is evictable exactly like an
idle one, and the new connection takes the place of whichever has waited
longest (idle since, or stalled since). An evicted stalled connection is aborted
(reset): closing it gracefully would wait for a flush that never comes. And
without any pressure, a stall longer than ``keepalive_timeout`` (75 s; the time
a client may stay silent between requests is also the time it may stop reading)
aborts the connection (``http.write_stalled`` at debug), so an SSE stream or a
follow whose reader stopped reading does not hold its place forever. A stream
whose client reads never pauses writing for that long, so it is never cut.

The budget and the handler live together because each calls the other: the
budget picks and evicts a handler, a handler tells its budget when it turns
idle, busy, stalled or flowing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .app import SERVER_SOFTWARE
from .jsonio import dumps_bytes
from .protocol_errors import JsonErrorHandler

log = structlog.get_logger("stablehand.http")

WARN_EVERY = 10.0           # seconds between two http.connections_full warnings


def _raw_response(status: str, message: str, code: str) -> bytes:
    body = dumps_bytes({"error": message, "code": code})
    head = (f"HTTP/1.1 {status}\r\nServer: {SERVER_SOFTWARE}\r\n"
            f"Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if code == "unavailable":
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


class Budget:
    """How many connections one kind of listener may hold open at once, and which of them
    are evictable: idle (waiting for a request) or stalled (the client is not reading what
    we write), each kept in the order they became so."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.open = 0
        self._idle: dict[GuardedHandler, float] = {}     # insertion order: longest idle first
        self._stalled: dict[GuardedHandler, float] = {}  # insertion order: longest stalled first
        self._refused = self._evicted = 0             # since the last warning
        self._warned_at = -WARN_EVERY
        self._refusal = _raw_response(
            "503 Service Unavailable",
            f"too many connections: all {limit} of this {name} listener's are busy; retry later",
            "unavailable")

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Take a place for a new connection: a free one, else the longest-idle connection's
        (which is closed), else none: answer 503 and close the new connection."""
        if self.open >= self.limit:
            victim = self._victim()
            if victim is None:
                self._refused += 1
                self._warn()
                cast(asyncio.Transport, transport).write(self._refusal)  # uvloop's are not asyncio's
                transport.close()
                return False
            self._evicted += 1
            self._warn()
            victim.evict(_EVICTED)
        self.open += 1
        return True

    def _victim(self) -> GuardedHandler | None:
        """The connection that has waited longest, idle or stalled, if any."""
        candidates = [next(iter(d.items())) for d in (self._idle, self._stalled) if d]
        return min(candidates, key=lambda item: item[1])[0] if candidates else None

    def idle(self, handler: GuardedHandler) -> None:
        self._idle.pop(handler, None)
        self._idle[handler] = time.monotonic()

    def busy(self, handler: GuardedHandler) -> None:
        self._idle.pop(handler, None)

    def stalled(self, handler: GuardedHandler) -> None:
        self._stalled.pop(handler, None)
        self._stalled[handler] = time.monotonic()

    def flowing(self, handler: GuardedHandler) -> None:
        self._stalled.pop(handler, None)

    def release(self, handler: GuardedHandler) -> None:
        self._idle.pop(handler, None)
        self._stalled.pop(handler, None)
        self.open -= 1

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            log.warning("http.connections_full", listener=self.name, limit=self.limit,
                        evicted_idle=self._evicted, refused=self._refused)
            self._warned_at, self._refused, self._evicted = now, 0, 0


_TIMEOUT = _raw_response("408 Request Timeout",
                         "the request line and headers did not arrive in time", "timeout")
_EVICTED = _raw_response("503 Service Unavailable",
                         "too many connections: this one was the longest idle and its place went "
                         "to a newer one; retry", "unavailable")


class GuardedHandler(JsonErrorHandler):
    """aiohttp's per-connection protocol with a budget place and a header deadline."""

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, budget: Budget,
                 header_timeout: float, stall_timeout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._budget = budget
        self._header_timeout = header_timeout
        self._stall_timeout = stall_timeout  # <= 0: a stall is never cut without pressure
        self._stall: asyncio.TimerHandle | None = None  # armed while writing is paused
        self._connected = False     # aiohttp's connection_made ran (so its connection_lost must)
        self._placed = False        # holds a place in the budget
        self._deadline: asyncio.TimerHandle | None = None
        self._answered = 0          # requests whose response is finished
        self._received = False      # bytes of the request under the deadline have arrived
        self._unread_body: Any = None  # the body of an answered request that aiohttp still drains

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._budget.admit(transport):
            return
        self._connected = self._placed = True
        super().connection_made(transport)
        self._arm()
        self._budget.idle(self)

    def data_received(self, data: bytes) -> None:
        if not self._connected:
            return
        if self._unread_body is not None and self._unread_body.is_eof():
            self._unread_body = None
        if data and self._request_count == self._answered and self._unread_body is None:
            # No request is being answered nor its body drained: these bytes begin the next one.
            self._received = True
            self._arm()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request line and its headers are complete
            self._disarm()
            self._received = False
            if self._placed:
                self._budget.busy(self)

    async def finish_response(self, request: BaseRequest, resp: StreamResponse,
                              start_time: float | None) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if not request.content.is_eof():  # aiohttp reads the rest ("lingering") next
                self._unread_body = request.content
            if self._placed and self._request_count == self._answered:
                self._budget.idle(self)

    def pause_writing(self) -> None:
        """The client is not reading: the connection is stalled, so evictable, and cut if it
        stays so for longer than ``stall_timeout``."""
        super().pause_writing()
        if not self._connected:
            return
        if self._placed:
            self._budget.stalled(self)
        log.debug("http.write_paused", listener=self._budget.name,
                  peer=_peer(self.transport) if self.transport is not None else None)
        if self._stall is None and self._stall_timeout > 0:
            self._stall = self._loop.call_later(self._stall_timeout, self._stalled_too_long)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._connected:
            return
        self._connected = False
        self._release()
        super().connection_lost(exc)

    def evict(self, refusal: bytes) -> None:
        """Give this idle or stalled connection's place to a new one: close it (with a 503 if
        it had begun a request, silently if it was only being kept alive); a stalled one is
        aborted, since a graceful close would wait for a flush that never comes."""
        transport = self.transport
        stalled = self.writing_paused
        log.debug("http.connection_evicted", listener=self._budget.name, stalled=stalled,
                  peer=_peer(transport) if transport is not None else None)
        self._release()
        if transport is not None and stalled:
            transport.abort()
        elif transport is not None and self._received:
            transport.write(refusal)
        self.force_close()

    def _stalled_too_long(self) -> None:
        self._stall = None
        transport = self.transport
        if transport is None or not self.writing_paused:
            return
        log.debug("http.write_stalled", listener=self._budget.name, peer=_peer(transport),
                  timeout=self._stall_timeout)
        self._release()
        transport.abort()
        self.force_close()

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._placed:
            self._budget.flowing(self)

    def _release(self) -> None:
        self._disarm()
        self._unstall()
        if self._placed:
            self._placed = False
            self._budget.release(self)

    def _arm(self) -> None:
        if self._deadline is None and self._header_timeout > 0:
            self._deadline = self._loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or self._request_count != self._answered:
            return
        log.debug("http.header_timeout", listener=self._budget.name, peer=_peer(transport),
                  timeout=self._header_timeout, partial=self._received)
        if self._received:
            transport.write(_TIMEOUT)
        self.force_close()


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}"
    return None
