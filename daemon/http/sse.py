"""``GET /events``: server-sent events, one per committed state change.

Each event has ``id`` (a sequence number for ``Last-Event-ID``), ``event: state``
and as data the record plus ``state``/``exitState`` at the top. ``?id=`` and
``?ref=`` filter. A comment line every HEARTBEAT seconds keeps proxies from
closing an idle stream. A client that leaves is noticed within GONE_CHECK
seconds (or at the next write) and logged at debug as ``http.client_gone``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

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
    hub = supervisor_of(request).events
    queue, missed = hub.subscribe(last)
    response = streaming.event_stream()
    try:
        if not await streaming.begin(request, response):
            return response
        await response.write(b": stablehand events\n\n")
        pending = list(missed)
        quiet = 0.0
        while True:
            if not pending:
                try:
                    pending.append(await asyncio.wait_for(queue.get(), GONE_CHECK))
                except TimeoutError:
                    if streaming.gone(request):
                        raise ConnectionResetError("the client went away") from None
                    quiet += GONE_CHECK
                    if quiet >= HEARTBEAT:
                        await response.write(b": heartbeat\n\n")
                        quiet = 0.0
                    continue
            event = pending.pop(0)
            if only_id_value is not None and event.process_id != only_id_value:
                continue
            if only_ref is not None and event.ref != only_ref:
                continue
            await response.write(streaming.event(
                "state", {"id": event.process_id, "state": event.record["state"],
                          "exitState": event.record["exitState"], "record": event.record}, event.seq))
            quiet = 0.0
    except ConnectionError:  # the stream ends only when its client leaves (or at shutdown)
        if not streaming.client_gone(request):
            raise
        return response
    finally:
        hub.unsubscribe(queue)
