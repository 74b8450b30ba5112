"""``GET /events``: server-sent events, one per committed state change.

Each event has ``id`` (a sequence number for ``Last-Event-ID``), ``event: state``
and as data the record plus ``state``/``exitState`` at the top. ``?id=`` and
``?ref=`` filter; a stream with ``?id=`` renews that process's lease while it is
open (daemon/supervisor/leases.py). A comment line every HEARTBEAT seconds keeps proxies from
closing an idle stream. A client that leaves is noticed within GONE_CHECK
seconds (or at the next write) and logged at debug as ``http.client_gone``.

The stream has no end of its own but the daemon's: once its shutdown begins,
the changes already published are sent, then ``event: shutdown`` (data
``{"reason": "the daemon is shutting down"}``), and the stream ends (see
:mod:`.streaming`). Changes the shutdown itself makes (children stopped under
``shutdown = "stop"``) are in the records when the daemon is back.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..events import ChangeEvent
from . import parse, streaming
from .keys import supervisor_of

routes = web.RouteTableDef()
HEARTBEAT = 15.0
GONE_CHECK = 1.0   # seconds: a client that left is noticed (and its queue freed) this soon


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    only_id = request.query.get("id")
    only_id_value = parse.positive_int(only_id, "query parameter 'id'") if only_id is not None else None
    only_ref = request.query.get("ref")
    last = parse.last_event_id(request)
    supervisor = supervisor_of(request)
    hub = supervisor.events
    queue, missed = hub.subscribe(last)
    response = streaming.event_stream()
    closing = streaming.closing_now(supervisor)
    try:
        if not await streaming.begin(request, response):
            return response
        await response.write(b": stablehand events\n\n")
        pending = list(missed)
        quiet = 0.0
        while True:
            if only_id_value is not None:   # a stream of one process renews its lease
                supervisor.keep_alive(only_id_value)
            if not pending:
                if closing.done():
                    while not queue.empty():       # what was published before the shutdown
                        pending.append(queue.get_nowait())
                    for event in pending:
                        await _send(response, event, only_id_value, only_ref)
                    await response.write(streaming.shutdown_event())
                    await response.write_eof()
                    return response
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait((getter, closing), timeout=GONE_CHECK,
                                   return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    pending.append(getter.result())
                    continue
                getter.cancel()                    # an item stays queued for the next get
                if closing.done():
                    continue
                if streaming.gone(request):
                    raise ConnectionResetError("the client went away")
                quiet += GONE_CHECK
                if quiet >= HEARTBEAT:
                    await response.write(b": heartbeat\n\n")
                    quiet = 0.0
                continue
            if await _send(response, pending.pop(0), only_id_value, only_ref):
                quiet = 0.0
    except ConnectionError:  # the client left
        if not streaming.client_gone(request):
            raise
        return response
    finally:
        closing.cancel()
        hub.unsubscribe(queue)


async def _send(response: web.StreamResponse, event: ChangeEvent, only_id: int | None,
                only_ref: str | None) -> bool:
    """Write one change unless the filters leave it out; whether it was written."""
    if only_id is not None and event.process_id != only_id:
        return False
    if only_ref is not None and event.ref != only_ref:
        return False
    await response.write(streaming.event(
        "state", {"id": event.process_id, "state": event.record["state"],
                  "exitState": event.record["exitState"], "record": event.record}, event.seq))
    return True
