"""Talking to a running process: its output, its stdin, signals, a graceful stop, deletion."""

from __future__ import annotations

import signal as signal_module

from aiohttp import web

from ..errors import BadRequest
from ..output import STREAMS, OutputOverrun, OutputReader
from . import parse, streaming
from .jsonio import json_response
from .keys import supervisor_of

routes = web.RouteTableDef()

FOLLOW_POLL = 0.05          # seconds between looks at a followed file
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
    """
    process_id = parse.path_id(request)
    stream = request.query.get("stream", "stdout")
    if stream not in STREAMS:
        raise BadRequest("query parameter 'stream' must be stdout or stderr")
    offset = _query_int(request, "offset", 0, minimum=0) or 0
    limit = _query_int(request, "limit", None)
    follow = request.query.get("follow", "0")
    if follow not in ("0", "1", "true", "false"):
        raise BadRequest("query parameter 'follow' must be 0 or 1")
    supervisor = supervisor_of(request)
    reader = await supervisor.output_reader(process_id, stream)
    start = max(offset, reader.dropped())
    if follow in ("0", "false"):
        size = await reader.size()
        end = max(start, size if limit is None else min(size, start + limit))
        return await _send_range(request, reader, start, end)
    response = web.StreamResponse(headers={"X-Output-Offset": str(start)})
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    position = start
    try:
        await response.prepare(request)
        if not streaming.headers_only(request):
            async for _ in streaming.follow(request, lambda: supervisor.is_active(process_id),
                                            FOLLOW_POLL):
                while True:  # all that is on disk now
                    position, data = await reader.read(position)
                    if not data:
                        break
                    await response.write(data)
                    position += len(data)
        await response.write_eof()
    except ConnectionError:
        if not streaming.client_gone(request):
            raise
    return response


async def _send_range(request: web.Request, reader: OutputReader, start: int,
                      end: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"X-Output-Offset": str(start), "X-Output-Next": str(end)})
    response.content_type = "application/octet-stream"
    response.content_length = end - start
    try:
        await response.prepare(request)
        if not streaming.headers_only(request):
            async for chunk in reader.chunks(start, end):
                await response.write(chunk)
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
    process_id = parse.path_id(request)
    data = await request.read()
    if len(data) > MAX_STDIN_BYTES:
        raise BadRequest(f"at most {MAX_STDIN_BYTES} bytes per write")
    written = await supervisor_of(request).write_stdin(process_id, data)
    return json_response({"written": written})


@routes.post("/processes/{id}/stdin/close")
async def close_stdin(request: web.Request) -> web.Response:
    await supervisor_of(request).close_stdin(parse.path_id(request))
    return web.Response(status=204)


@routes.post("/processes/{id}/signal")
async def send_signal(request: web.Request) -> web.Response:
    """Deliver any signal (to the process, or ``group: true`` its process group); state unchanged."""
    process_id = parse.path_id(request)
    body = await parse.json_object(request, required=True)
    supervisor = supervisor_of(request)
    number = parse.signal(body.get("signal"), supervisor.signal_number)
    group = body.get("group", False)
    if not isinstance(group, bool):
        raise BadRequest("'group' must be a boolean")
    await supervisor.get(process_id)
    supervisor.send_signal(process_id, number, group=group)
    return json_response((await supervisor.get(process_id)).to_json())


@routes.post("/processes/{id}/stop")
async def stop(request: web.Request) -> web.Response:
    """Graceful stop with a chosen first signal and grace, then SIGKILL; answers as kill does."""
    process_id = parse.path_id(request)
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
    await supervisor_of(request).delete(parse.path_id(request))
    return web.Response(status=204)
