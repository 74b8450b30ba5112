"""Terminals: ``POST /processes/{id}/resize`` and ``GET /processes/{id}/tty`` (a WebSocket).

A process started with ``tty: {rows, cols}`` runs on a pseudo-terminal whose
master the keeper holds (daemon/keeper/children.py), so the terminal survives
a daemon restart. Its output is the terminal's byte stream, captured as its
``stdout`` (same cap, same ranged reads and follow); ``POST /processes/{id}/stdin``
writes keystrokes. This module adds the two terminal-only routes.

The WebSocket carries raw bytes both ways, binary frames only:

* **Out**: the terminal's bytes from the current end of the capture when the
  socket opens (``?offset=N`` to replay from byte N; bytes the cap dropped are
  skipped), followed as the output follow does (:class:`.streaming.Follow`,
  polling the file every :data:`POLL` s). Each frame is one read of the file
  (at most the reader's chunk), not one write of the program.
* **In**: every binary frame is written to the terminal as it is (a stdin
  write: Ctrl-C is ``\\x03``). Frames are written in order; while the program
  does not read (the keeper's 1 MiB buffer full) the socket's reading waits,
  up to the stdin write's timeout, then the socket is closed (1011).
  A text frame closes the socket with 1003 ("binary frames only").
* **Viewers and writers**: any number of sockets may watch one terminal, and
  every one of them may write (decided: all writers, no floor control; writes
  of different sockets never interleave within a frame, as stdin writes are
  serialised per process, but keystrokes of two typists mix as on a shared
  tmux session). A client wanting a read-only view simply sends nothing.
* **End**: when the process ends, after its last bytes, the daemon closes with
  1000 and reason ``exit:N`` (N its exit code; for a signal ``128+signo``,
  as a shell's ``$?`` says it). A socket opened on a process that already
  ended gets what is past its offset and that close at once. When the
  daemon's shutdown leaves the process running (``shutdown = "detach"``) the
  socket closes with 1001 ("the daemon is shutting down"): reconnect to the
  next daemon, with ``?offset=`` from the bytes received to miss nothing.
* A plain GET without the upgrade is answered 426 (JSON, as every error). A
  process without a terminal is 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import ApiError, BadRequest, Conflict
from ..model import Process
from ..output import OutputReader
from . import parse, pids, streaming
from .jsonio import json_response
from .keys import supervisor_of

routes = web.RouteTableDef()

MAX_SIZE = 1000                 # most rows, and most cols
POLL = 0.05                     # seconds between looks at the followed capture
MAX_FRAME = 1024 * 1024         # bytes in one frame from a client (one stdin write)
HEARTBEAT = 30.0                # seconds between pings, so a vanished peer is noticed


class UpgradeRequired(ApiError):
    status = 426


def window_size(value: Any, field: str) -> dict[str, int]:
    """``{"rows": R, "cols": C}`` (integers 1..1000, nothing else); BadRequest names the field."""
    if not isinstance(value, dict):
        raise BadRequest(f"'{field}' must be an object {{rows, cols}}")
    unknown = sorted(set(value) - {"rows", "cols"})
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}' in '{field}'")
    size = {}
    for key in ("rows", "cols"):
        number = parse.integral(value.get(key))   # JSON's 24.0 is 24
        if type(number) is not int or not 1 <= number <= MAX_SIZE:
            raise BadRequest(f"'{field}.{key}' must be an integer from 1 to {MAX_SIZE}")
        size[key] = number
    return size


@routes.post("/processes/{id}/resize")
async def resize(request: web.Request) -> web.Response:
    """Set the terminal's window size; the kernel sends its foreground programs SIGWINCH."""
    process_id = await pids.process_id(request)
    size = window_size(await parse.json_object(request, required=True), "body")
    record = await supervisor_of(request).resize(process_id, size["rows"], size["cols"])
    return json_response(record.to_json())


@routes.get("/processes/{id}/tty")
async def tty(request: web.Request) -> web.StreamResponse:
    process_id = await pids.process_id(request)
    supervisor = supervisor_of(request)
    record = await supervisor.get(process_id)
    if record.tty is None:
        raise Conflict(f"process {process_id} has no terminal (it was not started with tty)")
    offset_text = request.query.get("offset")
    offset = None if offset_text is None else parse.whole_number(
        offset_text, "query parameter 'offset'", 0)
    socket = upgrade(request)
    reader = await supervisor.output_reader(process_id, "stdout")
    start = max(await reader.size() if offset is None else offset, await reader.dropped())
    await socket.prepare(request)

    async def send_output() -> None:
        ended = await follow(request, socket, reader, start, process_id, socket.send_bytes)
        if ended is not None:
            await close_at_end(socket, ended, await supervisor.get(process_id))

    output = asyncio.create_task(send_output())
    try:
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                await socket.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames only")
                break
            if message.type is WSMsgType.BINARY and message.data:
                if not await type_keys(supervisor, socket, process_id, message.data):
                    break
    finally:
        await finish(output)
    return socket


# --- shared with Tensorlake's PTY API (tensorlake/pty.py) ------------------------------------

def upgrade(request: web.Request) -> web.WebSocketResponse:
    """The WebSocket for ``request`` (to prepare), or 426 if it is no WebSocket handshake."""
    socket = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=HEARTBEAT)
    if not socket.can_prepare(request).ok:
        raise UpgradeRequired("this route is a WebSocket: send the Upgrade handshake")
    return socket


async def finish(output: asyncio.Task[None]) -> None:
    """The socket's reading ended: stop following (unless the task is closing at the end)."""
    if not output.done():
        output.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await output


async def type_keys(supervisor: Any, socket: web.WebSocketResponse, process_id: int,
                    data: bytes) -> bool:
    """Write one frame to the terminal. False (the socket closed) when it cannot be written:
    except that a process that just ended is left to the output task's close."""
    try:
        await supervisor.write_stdin(process_id, data)
    except ApiError as exc:
        if not supervisor.is_active(process_id):
            return True   # its end is on the way: the output task closes with exit:N
        code = WSCloseCode.TRY_AGAIN_LATER if exc.status == 503 else WSCloseCode.POLICY_VIOLATION
        await socket.close(code=code, message=exc.message.encode()[:120])
        return False
    return True


async def follow(request: web.Request, socket: web.WebSocketResponse, reader: OutputReader,
                 position: int, process_id: int,
                 send: Callable[[bytes], Awaitable[None]]) -> bool | None:
    """Send the capture from ``position`` on as it grows, until the process ends (True), the
    daemon's shutdown leaves it running (False) or the socket closes (None)."""
    supervisor = supervisor_of(request)
    rounds = streaming.Follow(request, supervisor, process_id, POLL)
    async for _active in rounds.rounds():
        while not socket.closed:
            position, data = await reader.read(position)
            if not data:
                break
            await send(data)
            position += len(data)
        if socket.closed:
            return None
    return not rounds.shutdown


async def close_at_end(socket: web.WebSocketResponse, ended: bool, record: Process) -> None:
    if not ended:
        await socket.close(code=WSCloseCode.GOING_AWAY, message=streaming.SHUTTING_DOWN.encode())
    else:
        code = exit_code(record)
        reason = f"exit:{'unknown' if code is None else code}"
        await socket.close(code=WSCloseCode.OK, message=reason.encode())


def exit_code(record: Process) -> int | None:
    """The exit code, or 128 + the signal's number, as a shell's ``$?``; None if unknown."""
    if record.exit_code is not None:
        return record.exit_code
    if record.exit_signal is not None:
        try:
            return 128 + signal.Signals[record.exit_signal]
        except KeyError:
            return None
    return None
