"""Tensorlake's PTY API, as its SDK speaks it (``tensorlake`` on PyPI, ``sandbox/pty.py``).

* ``POST /api/v1/pty`` ``{command, args, env, working_dir, rows, cols}`` starts
  ``[command, *args]`` on a terminal (a native record with ``tty``, so the keeper
  holds it and it survives a daemon restart) and answers 201 ``{session_id,
  token}``. The session id is the record's id (as a string); the token is 32
  random bytes, URL-safe, shown once: the record keeps only its SHA-256
  (``tty_token``, never shown), so the token still opens the session after a
  daemon restart. Those six fields only, each as ``POST /api/v1/processes``
  takes it (wire.py); ``rows``/``cols`` default to 24/80, each 1..1000.
* ``GET /api/v1/pty/{session_id}/ws``: the token in ``X-PTY-Token`` or
  ``?token=`` (401 ``invalid_token`` without the right one; the daemon's own
  bearer token is checked before, as on every route). Binary frames, first byte
  the opcode: server ``0x00``+bytes (output), client ``0x00``+bytes (input),
  client ``0x01``+``>HH`` cols, rows (resize, clamped to 1..1000), client ``0x02``
  (ready: accepted, nothing waits for it — output starts at once, the SDK
  installs its handlers before it connects), server ``0x03``+``>i`` exit code,
  then the close, 1000 with reason ``exit:N``. Text frames close with 1003;
  unknown opcodes are ignored. On connect the newest :data:`REPLAY` bytes of the
  terminal are sent first (its recent screen, as a re-attached tmux redraws), then
  what follows. Any number of connections per session, all may type.
* ``DELETE /api/v1/pty/{session_id}``: SIGKILL to the session's process tree; 204
  (also when it already ended), 404 for an unknown session. No session token: the
  SDK's ``kill`` sends only its API headers.

The exit code of a process a signal ended is 128 + the signal number (as the
native WebSocket says it); -1 when unknown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
import struct

from aiohttp import WSMsgType, web

from ...errors import ApiError, BadRequest, NotFound
from ...model import ACTIVE, Process, State
from .. import terminal
from ..jsonio import json_response
from ..keys import supervisor_of
from . import wire

routes = web.RouteTableDef()

OP_DATA, OP_RESIZE, OP_READY, OP_EXIT = 0x00, 0x01, 0x02, 0x03
REPLAY = 64 * 1024              # bytes of the terminal's recent output a connection starts with
SIZE_FIELDS = frozenset({"rows", "cols"})
FIELDS = frozenset({"command", "args", "env", "working_dir"}) | SIZE_FIELDS


class InvalidToken(ApiError):
    status = 401


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@routes.post("/api/v1/pty")
async def create(request: web.Request) -> web.Response:
    body = await wire.start_body(request)
    unknown = sorted(set(body) - FIELDS)
    if unknown:   # a process start's other fields (modes, user) mean nothing on a terminal
        raise BadRequest(f"unknown field {unknown[0][:80]!r}", code="invalid_request")
    spec = wire.spec(body, extra=SIZE_FIELDS)
    size = {key: body.get(key, default) for key, default in (("rows", 24), ("cols", 80))}
    try:
        size = terminal.window_size(size, "size")
    except BadRequest as exc:
        raise BadRequest(exc.message.replace("'size.", "'"), code="invalid_request") from None
    token = secrets.token_urlsafe(32)
    spec = dataclasses.replace(spec, tty=size, stdin="pipe", tty_token=token_hash(token))
    record, _ = await supervisor_of(request).create(spec)
    if record.state is State.IDLE and record.pid is None:
        raise BadRequest(record.error or "the process could not be started", code="spawn_failed")
    return json_response({"session_id": str(record.id), "token": token}, status=201)


async def _session(request: web.Request) -> Process:
    text = request.match_info["session_id"]
    record = None
    if text.isdigit() and len(text) <= 19:
        try:
            record = await supervisor_of(request).get(int(text))
        except NotFound:
            pass
    if record is None or record.tty_token is None:
        raise NotFound(f"PTY session {text[:80]!r} not found", code="not_found")
    return record


@routes.get("/api/v1/pty/{session_id}/ws")
async def connect(request: web.Request) -> web.StreamResponse:
    record = await _session(request)
    given = request.headers.get("X-PTY-Token") or request.query.get("token") or ""
    assert record.tty_token is not None
    if not hmac.compare_digest(token_hash(given), record.tty_token):
        raise InvalidToken("a valid X-PTY-Token (or ?token=) is required for this session",
                           code="invalid_token")
    socket = terminal.upgrade(request)
    supervisor = supervisor_of(request)
    reader = await supervisor.output_reader(record.id, "stdout")
    start = max(await reader.size() - REPLAY, await reader.dropped(), 0)
    await socket.prepare(request)

    async def data(chunk: bytes) -> None:
        await socket.send_bytes(bytes([OP_DATA]) + chunk)

    async def send_output() -> None:
        ended = await terminal.follow(request, socket, reader, start, record.id, data)
        if ended is None:
            return
        final = await supervisor.get(record.id)
        if ended:
            code = terminal.exit_code(final)
            await socket.send_bytes(bytes([OP_EXIT]) + struct.pack(">i", -1 if code is None else code))
        await terminal.close_at_end(socket, ended, final)

    output = asyncio.create_task(send_output())
    try:
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                await socket.close(code=1003, message=b"binary frames only")
                break
            if message.type is not WSMsgType.BINARY or not message.data:
                continue
            frame: bytes = message.data
            if frame[0] == OP_DATA and len(frame) > 1:
                if not await terminal.type_keys(supervisor, socket, record.id, frame[1:]):
                    break
            elif frame[0] == OP_RESIZE and len(frame) >= 5:
                cols, rows = struct.unpack(">HH", frame[1:5])
                try:
                    await supervisor.resize(record.id, min(max(rows, 1), terminal.MAX_SIZE),
                                            min(max(cols, 1), terminal.MAX_SIZE))
                except ApiError:
                    pass   # it ended meanwhile: the output task says so
    finally:
        await terminal.finish(output)
    return socket


@routes.delete("/api/v1/pty/{session_id}")
async def kill(request: web.Request) -> web.Response:
    record = await _session(request)
    supervisor = supervisor_of(request)
    if record.state in ACTIVE:
        try:
            await supervisor.force_kill(record.id)
        except ApiError:
            pass   # it ended meanwhile
    return web.Response(status=204)
