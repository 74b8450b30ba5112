"""``GET /events``: server-sent events, one per committed state change.

Each event has ``id`` (a sequence number for ``Last-Event-ID``), ``event: state``
and as data the record plus ``state``/``exitState`` at the top. ``?id=`` and
``?ref=`` filter. A comment line every HEARTBEAT seconds keeps proxies from
closing an idle stream.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..errors import BadRequest
from . import parse
from .jsonio import dumps
from .keys import SUPERVISOR

routes = web.RouteTableDef()
HEARTBEAT = 15.0


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    only_id = request.query.get("id")
    only_id_value = parse.positive_int(only_id, "query parameter 'id'") if only_id is not None else None
    only_ref = request.query.get("ref")
    last = request.headers.get("Last-Event-ID")
    if last is not None and not (last.isascii() and last.isdigit()):
        raise BadRequest("Last-Event-ID must be a number from an earlier event")
    hub = request.app[SUPERVISOR].events
    queue, missed = hub.subscribe(int(last) if last is not None else None)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        await response.write(b": stablehand events\n\n")
        pending = list(missed)
        while True:
            if not pending:
                try:
                    pending.append(await asyncio.wait_for(queue.get(), HEARTBEAT))
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
            event = pending.pop(0)
            if only_id_value is not None and event.process_id != only_id_value:
                continue
            if only_ref is not None and event.ref != only_ref:
                continue
            data = dumps({"id": event.process_id, "state": event.record["state"],
                          "exitState": event.record["exitState"], "record": event.record})
            await response.write(f"id: {event.seq}\nevent: state\ndata: {data}\n\n".encode())
    finally:
        hub.unsubscribe(queue)
