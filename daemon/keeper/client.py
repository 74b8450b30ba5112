"""The daemon's side of the keeper protocol: an asyncio client (no aiohttp, no threads).

Usage from the supervisor::

    keeper = await connect_or_start(state_dir, start_cmd=[sys.executable, "-m", "daemon",
                                    "keeper", "--state-dir", state_dir],
                                    on_exit=supervisor.on_keeper_exit,
                                    on_lost=supervisor.on_keeper_lost)
    listing = await keeper.list()        # every live child and every unacknowledged exit
    spawned = await keeper.spawn(7, argv, env, cwd, stdin="pipe", max_output_bytes=cap)
    ...                                  # on_exit(ExitEvent) -> commit it -> await keeper.ack([7])

Delivery. ``on_exit`` is called in the loop, synchronously, as each exit event
is read (after the keeper fsynced it to its journal). Without ``on_exit`` the
events queue up for ``async for event in client.exits()``. An exit can be seen
more than once (as an event and in a ``list`` reply sent just after it, or again
after a keeper restart that lost an ack): handle exits idempotently by id, and
``ack`` only once the exit is committed. The keeper keeps an exit until it is
acknowledged, across daemon restarts and its own.

Failure. Every request raises a :class:`KeeperError` subclass chosen by the
keeper's errno (the map is :data:`ERRORS`). When the connection drops — keeper
killed, or replaced by a newer connection — every pending request and every
later one raises :class:`KeeperGone` at once, ``on_lost`` is called once, and
``exits()`` ends with it. The client never reconnects by itself: that is the
supervisor's policy (call :func:`connect_or_start` again).

A request cancelled while awaiting its reply has still been sent: a cancelled
``spawn`` may have started the child (``list`` will show it). Run spawns in
tasks that are not cancelled by an HTTP client going away.

Starting a keeper: :func:`connect_or_start` (re-exported here) starts one when
none answers; how it is started, logged and reaped, and how two racing daemons
are settled, is in :mod:`.starting`.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from . import protocol
from .records import (
    ERRORS,
    ChildInfo,
    ExitEvent,
    KeeperError,
    KeeperGone,
    KeeperRefused,
    KeeperUnavailable,
    Listing,
    NoSuchChild,
    Spawned,
    SpawnFailed,
    StdinClosed,
    StdinFull,
    fields_of,
)
from .starting import StartedKeeper, connect_or_start

__all__ = ["ChildInfo", "ExitEvent", "KeeperClient", "KeeperError", "KeeperGone", "KeeperRefused",
           "KeeperUnavailable", "Listing", "NoSuchChild", "SpawnFailed", "Spawned", "StartedKeeper",
           "StdinClosed", "StdinFull", "connect_or_start"]

MAX_REPLY = 256 * 1024 * 1024


def _dumps(message: dict[str, Any]) -> bytes:
    """A request line. orjson (the daemon has it): a spawn with a 36-variable env encodes
    in 2.5 µs instead of 25. The standard library's encoder takes over for a string
    orjson refuses: a lone surrogate, as ``os.environ`` holds for bytes that are not UTF-8
    (escaped as ``\\udcXX``, which the keeper's decoder turns back into the same string)."""
    try:
        return orjson.dumps(message) + b"\n"
    except TypeError:
        return protocol.encode(message)


def _loads(line: bytes) -> Any:
    """A line from the keeper: orjson, or the standard library for what orjson refuses (a
    lone surrogate's escape, as in a non-UTF-8 argv the keeper names in an error)."""
    try:
        return orjson.loads(line)
    except ValueError:
        return json.loads(line)


_PEERCRED = struct.Struct("3i")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.client: KeeperClient | None = None
        self.buffer = bytearray()
        self.lost: asyncio.Future[None] | None = None
        self.paused: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        start = 0
        while (end := self.buffer.find(b"\n", start)) >= 0:
            line = bytes(self.buffer[start:end])
            start = end + 1
            if self.client is not None:
                try:
                    message = _loads(line)
                except ValueError:
                    self.client._gone("the keeper sent a line that is not JSON")
                    return
                self.client._received(message)
        del self.buffer[:start]
        if len(self.buffer) > MAX_REPLY and self.client is not None:
            self.client._gone("the keeper sent a line too long to read")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client._gone(f"connection to the keeper lost ({exc or 'closed'})")
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)

    def pause_writing(self) -> None:
        self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None


class KeeperClient:
    """One connection to the keeper of a state dir, after a successful hello."""

    def __init__(self, transport: asyncio.Transport, proto: _Protocol, state_dir: str,
                 on_exit: Callable[[ExitEvent], None] | None,
                 on_lost: Callable[[KeeperGone], None] | None) -> None:
        self.state_dir = state_dir
        self.pid = 0                   # the keeper's pid, from its hello
        self.version = 0
        self.started: StartedKeeper | None = None
        self._transport = transport
        self._proto = proto
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._corked: list[bytes] = []    # requests of this turn, written together
        self._events: asyncio.Queue[ExitEvent | None] = asyncio.Queue()
        self._gone_error: KeeperGone | None = None
        self._replaced = False
        self._closed: asyncio.Future[KeeperGone] = asyncio.get_running_loop().create_future()
        proto.client = self

    @classmethod
    async def connect(cls, state_dir: str, *, on_exit: Callable[[ExitEvent], None] | None = None,
                      on_lost: Callable[[KeeperGone], None] | None = None,
                      timeout: float = 5.0) -> KeeperClient:
        """Connect and say hello. KeeperUnavailable if nothing answers; KeeperRefused; KeeperError."""
        state_dir = os.path.abspath(state_dir)
        loop = asyncio.get_running_loop()
        dirfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) \
            if protocol.needs_dirfd(state_dir) else None
        try:
            transport, proto = await asyncio.wait_for(loop.create_unix_connection(
                _Protocol, protocol.socket_address(state_dir, dirfd)), timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise KeeperUnavailable(f"no keeper answers for {state_dir}: {exc.strerror}",
                                    exc.errno) from None
        except TimeoutError:
            raise KeeperError(f"the keeper for {state_dir} did not accept within {timeout}s",
                              errno.ETIMEDOUT) from None
        except OSError as exc:
            raise KeeperError(f"cannot reach the keeper for {state_dir}: {exc}", exc.errno) from None
        finally:
            if dirfd is not None:
                os.close(dirfd)
        client = cls(transport, proto, state_dir, on_exit, on_lost)
        try:
            await asyncio.wait_for(client.hello(), timeout)
        except BaseException as exc:
            client._on_lost = None   # never connected: nothing was lost
            client._transport.abort()
            if isinstance(exc, TimeoutError):
                raise KeeperError(f"the keeper for {state_dir} did not answer hello within "
                                  f"{timeout}s", errno.ETIMEDOUT) from None
            raise
        return client

    async def hello(self) -> None:
        """Done by :meth:`connect`: identify ourselves; learn the keeper's pid and version."""
        try:
            reply = await self._request({"op": "hello", "version": protocol.VERSION,
                                         "state_dir": self.state_dir})
        except KeeperGone:
            raise
        except KeeperError as exc:
            raise KeeperRefused(str(exc), exc.errno) from None
        self.pid, self.version = reply["pid"], reply["version"]

    # --- requests --------------------------------------------------------------------

    async def spawn(self, id: int, argv: Sequence[str], env: Mapping[str, str],
                    cwd: str | None = None, *, stdin: str = "null", stdout: str = "capture",
                    stderr: str = "capture", max_output_bytes: int | None = None,
                    tty: Any = None) -> Spawned:
        """Start a child; output goes to ``<state_dir>/output/<id>.stdout|.stderr``.

        ``env`` is the complete environment. SpawnFailed (with the reason) if it
        cannot start, KeeperError for a refused request (an id in use, bad fields).
        """
        try:
            reply = await self._request({
                "op": "spawn", "id": id, "argv": list(argv), "env": dict(env), "cwd": cwd,
                "stdin": stdin, "stdout": stdout, "stderr": stderr,
                "max_output_bytes": max_output_bytes, "tty": tty})
        except (KeeperGone, NoSuchChild):
            raise
        except KeeperError as exc:
            if exc.errno in (errno.EINVAL, errno.EEXIST, errno.EOPNOTSUPP, errno.ESHUTDOWN):
                raise
            raise SpawnFailed(str(exc), exc.errno) from None
        return Spawned(reply["pid"], reply["start_ticks"])

    async def signal(self, id: int, sig: int, *, group: bool = False) -> bool:
        """Signal a child through its pidfd (and its process group). False if it already exited."""
        reply = await self._request({"op": "signal", "id": id, "sig": int(sig), "group": group})
        return bool(reply["delivered"])

    async def stdin_write(self, id: int, data: bytes) -> int:
        """Hand ``data`` (at most 1 MiB) to the child's stdin; all of it or StdinFull."""
        reply = await self._request({"op": "stdin_write", "id": id,
                                     "data": base64.b64encode(data).decode("ascii")})
        return int(reply["written"])

    async def write_stdin_all(self, id: int, data: bytes, timeout: float = 30.0,
                              chunk: int = 256 * 1024) -> int:
        """Write all of ``data``, waiting (with backoff) while the keeper's buffer is full.

        StdinFull once ``timeout`` passes; the bytes written so far are in its message.
        """
        deadline = time.monotonic() + timeout
        written, delay = 0, 0.005
        while written < len(data):
            try:
                written += await self.stdin_write(id, data[written:written + chunk])
                delay = 0.005
            except StdinFull:
                if time.monotonic() + delay > deadline:
                    raise StdinFull(f"the process is not reading its stdin ({written} of "
                                    f"{len(data)} bytes written)", errno.EAGAIN) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        return written

    async def stdin_close(self, id: int) -> None:
        """Close the child's stdin once the bytes already accepted are written."""
        await self._request({"op": "stdin_close", "id": id})

    async def resize(self, id: int, rows: int, cols: int) -> None:
        """Set the window size of a child's terminal (StdinClosed/EBADF if it has none)."""
        await self._request({"op": "resize", "id": id, "rows": rows, "cols": cols})

    async def list(self) -> Listing:
        reply = await self._request({"op": "list"})
        return Listing([ChildInfo(**fields_of(ChildInfo, c)) for c in reply["children"]],
                       [ExitEvent(**fields_of(ExitEvent, e)) for e in reply["exits"]])

    async def ack(self, ids: Iterable[int]) -> int:
        """Drop committed exits from the keeper's journal; returns how many it still had."""
        reply = await self._request({"op": "ack", "ids": list(ids)})
        return int(reply["acked"])

    # --- events and lifetime ------------------------------------------------------------

    async def exits(self) -> AsyncIterator[ExitEvent]:
        """Exit events as they come (only when no ``on_exit`` was given); ends with KeeperGone."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)   # for the next reader too
                assert self._gone_error is not None
                raise self._gone_error
            yield event

    def peer_pid(self) -> int | None:
        """The pid at the other end of the socket (SO_PEERCRED): the keeper, as the kernel says."""
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            pid, _, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         _PEERCRED.size))
        except OSError:
            return None
        return int(pid)

    @property
    def closed(self) -> bool:
        return self._gone_error is not None

    async def wait_closed(self) -> KeeperGone:
        """Resolves, with the reason, when the connection is gone."""
        return await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Close our end (``on_lost`` is not called); the keeper and its children go on."""
        self._on_lost = None
        if self._corked:   # this turn's requests (acks, say) still go out before the close
            self._flush()
        self._gone("the client closed the connection")

    def _send(self, message: dict[str, Any], future: asyncio.Future[dict[str, Any]]) -> int:
        """Queue a request; the requests of one turn of the loop go in one write (a bulk
        stop's 200 signals cost the keeper one read and the daemon one send)."""
        seq = next(self._seq)
        self._pending[seq] = future
        if not self._corked:
            asyncio.get_running_loop().call_soon(self._flush)
        self._corked.append(_dumps({**message, "seq": seq}))
        return seq

    def _flush(self) -> None:
        data = b"".join(self._corked)
        self._corked.clear()
        if self._gone_error is None and not self._transport.is_closing():
            self._transport.write(data)

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._gone_error is not None:
            raise self._gone_error
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        seq = self._send(message, future)
        try:
            if self._proto.paused is not None:
                await asyncio.shield(self._proto.paused)
            reply = await future
        finally:
            self._pending.pop(seq, None)
        if not reply.get("ok"):
            err = reply.get("errno")
            raise ERRORS.get(err, KeeperError)(str(reply.get("error")), err)   # type: ignore[arg-type]
        return reply

    def _received(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "exit":
            exit_event = ExitEvent(**fields_of(ExitEvent, message))
            if self._on_exit is not None:
                try:
                    self._on_exit(exit_event)
                except Exception as exc:
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": "keeper on_exit callback failed", "exception": exc})
            else:
                self._events.put_nowait(exit_event)
            return
        if event == "replaced":
            self._replaced = True
            return
        seq = message.get("seq")
        future = self._pending.get(seq) if isinstance(seq, int) else None
        if future is None and seq is None and len(self._pending) == 1:
            future = next(iter(self._pending.values()))   # an error the keeper could not tie to a seq
        if future is not None and not future.done():
            future.set_result(message)

    def _gone(self, reason: str) -> None:
        if self._gone_error is not None:
            return
        if self._replaced:
            reason = "another daemon connection replaced this one"
        error = self._gone_error = KeeperGone(reason, errno.ECONNRESET)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._events.put_nowait(None)
        self._closed.set_result(error)
        self._transport.abort()
        if self._on_lost is not None:
            try:
                self._on_lost(error)
            except Exception as exc:
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "keeper on_lost callback failed", "exception": exc})
