"""Talking to a running process: its output, its stdin, signals, a graceful stop, deletion."""

from __future__ import annotations

import signal as signal_module
import time
from collections.abc import Callable

from aiohttp import web

from ..errors import BadRequest
from ..model import Process
from ..output import STREAMS, OutputOverrun, OutputReader
from ..output_times import ArrivalTimes, LineStamper, since_ms
from . import parse, pids, streaming
from .jsonio import json_response
from .keys import supervisor_of

routes = web.RouteTableDef()

FOLLOW_POLL = 0.05          # seconds between looks at a followed file
STAMP_HOLD = 0.25           # seconds a followed line may wait for its index record (output_times)
MAX_STDIN_BYTES = 1024 * 1024
MAX_GRACE = 86400.0


def _query_int(request: web.Request, name: str, default: int | None, minimum: int = 1) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    return parse.whole_number(text, f"query parameter '{name}'", minimum)


@routes.get("/processes/{id}/output")
async def output(request: web.Request) -> web.StreamResponse:
    """Captured bytes of one stream, by range; ``follow=1`` streams until the process is idle.

    Streamed from disk in bounded chunks (see ``OutputReader``), never read whole.
    Without follow the range is fixed when the request arrives: X-Output-Next is
    ``start`` plus the bytes then on disk (at most ``limit``), the body is exactly
    those bytes (Content-Length), and if some of them are dropped by the output cap
    before they are sent, the connection is closed short rather than send zeros.

    ``since`` (unix seconds or RFC 3339) starts the range at the first byte that
    arrived at or after it; ``timestamps=1`` prefixes each line of the body with
    its arrival time and a space (chunked then: no Content-Length). Both come
    from the keeper's arrival index (:mod:`daemon.output_times`, which says what
    happens without one). A follow that the daemon's shutdown ends (the process
    goes on) ends with its final chunk like any other (see :mod:`.streaming`).
    """
    process_id = await pids.process_id(request)
    stream = request.query.get("stream", "stdout")
    if stream not in STREAMS:
        raise BadRequest("query parameter 'stream' must be stdout or stderr")
    offset = _query_int(request, "offset", 0, minimum=0) or 0
    limit = _query_int(request, "limit", None)
    follow, timestamps = _flag(request, "follow"), _flag(request, "timestamps")
    since = _since(request)
    supervisor = supervisor_of(request)
    reader = await supervisor.output_reader(process_id, stream)
    start = max(offset, await reader.dropped())
    stamper = None
    if since is not None or timestamps:
        times = ArrivalTimes(supervisor.outputs.path(process_id, stream))
        await times.refresh()
        record = await supervisor.get(process_id)
        if since is not None:
            start = max(start, await _since_offset(times, since, record, reader))
        if timestamps:
            stamper = LineStamper(times, start, _fallback(record), hold=STAMP_HOLD if follow else 0.0)
    if not follow:
        size = await reader.size()
        end = max(start, size if limit is None else min(size, start + limit))
        return await _send_range(request, reader, start, end, stamper)
    response = web.StreamResponse(headers={"X-Output-Offset": str(start)})
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    position = start
    try:
        await response.prepare(request)
        if not streaming.headers_only(request):
            async for active in streaming.Follow(request, supervisor, process_id, FOLLOW_POLL).rounds():
                while True:  # all that is on disk now
                    position, data = await reader.read(position)
                    if not data:
                        break
                    if stamper is None:
                        await response.write(data)
                    else:
                        await _write_stamped(response, stamper, position, data)
                    position += len(data)
                if stamper is not None:   # lines held for their index record, the last line
                    await _write_stamped(response, stamper, final=not active)
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


async def _write_stamped(response: web.StreamResponse, stamper: LineStamper, offset: int = 0,
                         data: bytes = b"", final: bool = False) -> None:
    """Feed ``data`` (at ``offset``) to the stamper and write the lines it releases, after
    taking in the index records appended meanwhile if a waiting line needs them."""
    if data:
        stamper.feed(offset, data)
    if (stamper.hold or final) and (stamper.ready or (final and stamper.held)) \
            and stamper.needs_refresh():
        await stamper.times.refresh()
    out = stamper.release(final)
    if out:
        await response.write(out)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "0")
    if text not in ("0", "1", "true", "false"):
        raise BadRequest(f"query parameter '{name}' must be 0 or 1")
    return text in ("1", "true")


def _since(request: web.Request) -> int | None:
    """``since`` as unix milliseconds (None if absent); 400 when it is neither form."""
    text = request.query.get("since")
    if text is None:
        return None
    try:
        return since_ms(text)
    except ValueError as exc:
        raise BadRequest(f"query parameter 'since' {exc}") from None


async def _since_offset(times: ArrivalTimes, since: int, record: Process, reader: OutputReader) -> int:
    """Where ``since`` starts: by the index, else by the record's own times (output_times)."""
    found = times.offset_since(since)
    if found is not None:
        return found
    if record.completed_at is not None and since_ms(record.completed_at) < since:
        return await reader.size()   # it ended before: nothing is newer
    return 0                         # started at or after ``since``, or not known: everything


def _fallback(record: Process) -> Callable[[], int]:
    """The time of a line the index does not cover: the next time known after it (its
    process's end, or now while it runs)."""
    if record.completed_at is not None:
        completed = since_ms(record.completed_at)
        return lambda: completed
    return lambda: int(time.time() * 1000)


async def _send_range(request: web.Request, reader: OutputReader, start: int, end: int,
                      stamper: LineStamper | None = None) -> web.StreamResponse:
    response = web.StreamResponse(headers={"X-Output-Offset": str(start), "X-Output-Next": str(end)})
    response.content_type = "application/octet-stream"
    if stamper is None:
        response.content_length = end - start
    else:
        response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        if not streaming.headers_only(request):
            position = start
            async for chunk in reader.chunks(start, end):
                if stamper is None:
                    await response.write(chunk)
                else:
                    await _write_stamped(response, stamper, position, chunk)
                position += len(chunk)
            if stamper is not None:
                await _write_stamped(response, stamper, final=True)
        await response.write_eof()
    except OutputOverrun as exc:
        streaming.cut_short(request, str(exc))
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


@routes.post("/processes/{id}/stdin")
@parse.raw_body
async def write_stdin(request: web.Request) -> web.Response:
    process_id = await pids.process_id(request)
    data = await request.read()
    if len(data) > MAX_STDIN_BYTES:
        raise BadRequest(f"at most {MAX_STDIN_BYTES} bytes per write")
    written = await supervisor_of(request).write_stdin(process_id, data)
    return json_response({"written": written})


@routes.post("/processes/{id}/stdin/close")
async def close_stdin(request: web.Request) -> web.Response:
    await supervisor_of(request).close_stdin(await pids.process_id(request))
    return web.Response(status=204)


@routes.post("/processes/{id}/signal")
async def send_signal(request: web.Request) -> web.Response:
    """Deliver any signal (to the process, or ``group: true`` its process group); state unchanged."""
    process_id = await pids.process_id(request)
    body = await parse.json_object(request, required=True)
    supervisor = supervisor_of(request)
    number = parse.signal(body.get("signal"), supervisor.signal_number)
    group = body.get("group", False)
    if not isinstance(group, bool):
        raise BadRequest("'group' must be a boolean")
    await supervisor.get(process_id)
    await supervisor.send_signal(process_id, number, group=group)
    return json_response((await supervisor.get(process_id)).to_json())


@routes.post("/processes/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    """Graceful stop with a chosen first signal and grace, then SIGKILL; answers as kill does."""
    process_id = await pids.process_id(request)
    body = await parse.json_object(request)
    supervisor = supervisor_of(request)
    grace = body.get("grace")
    if grace is not None:
        grace = parse.number(grace, "grace", maximum=MAX_GRACE)
    number = parse.signal(body["signal"], supervisor.signal_number) \
        if body.get("signal") is not None else int(signal_module.SIGTERM)
    record = await supervisor.stop(process_id, grace=grace, sig=number)
    return json_response(record.to_json())


@routes.delete("/processes/{id}")
async def delete(request: web.Request) -> web.Response:
    await supervisor_of(request).delete(await pids.process_id(request))
    return web.Response(status=204)
