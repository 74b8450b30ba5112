"""The keeper's loop: one thread, one ``selectors`` loop, every fd non-blocking.

What wakes it: the listening socket; each connection; the signal wakeup pipe
(SIGCHLD for orphans re-parented to the keeper, SIGTERM/SIGINT to stop); and
the children's fds, which :class:`~.table.ChildTable` registers (pidfds, output
pipes, stdin pipes with bytes waiting). Timers are few and computed each turn:
pending index records (10 ms), hello deadlines, the stop's grace period.

Connections. Any number may be open, all from the keeper's own uid (checked
with SO_PEERCRED at accept; others are closed at once); the first message of
each must be a valid hello within :data:`HELLO_TIMEOUT`, and at most
:data:`MAX_UNGREETED` may be waiting for theirs. One connection at a time is
*the daemon*: the last one to say hello. A new hello replaces the previous
daemon connection, which is sent ``{"event": "replaced"}`` and closed: a
daemon that restarts cannot be locked out by its own half-dead predecessor,
and the daemon's own lock on the state dir already keeps two live daemons
apart. Requests from every greeted connection are served; exit events go to
the daemon connection only.

Stopping: SIGTERM or SIGINT stops every child: SIGTERM to each child's process
group (and to orphans re-parented to the keeper), SIGKILL to what is left after
the grace period (``--grace``, 10 s), every exit journalled and sent, then exit 0.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from . import protocol
from .connection import Connection
from .journal import Journal
from .protocol import RequestError
from .table import ChildTable

HELLO_TIMEOUT = 10.0
MAX_UNGREETED = 16
KILL_WAIT = 5.0                  # after SIGKILL at shutdown, the most we wait for exits
REPLY_DELAY = 0.0002             # replies queued this long are sent (see Keeper._serve)


def log(event: str, **fields: Any) -> None:
    """One JSON line on stderr (the keeper's log file): no structlog here."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    try:
        os.write(2, json.dumps({"timestamp": stamp + "Z", "event": event, **fields},
                               default=str).encode() + b"\n")
    except OSError:
        pass


class Keeper:
    def __init__(self, state_dir: str, listener: socket.socket, journal: Journal,
                 grace: float) -> None:
        self.state_dir = state_dir
        self.grace = grace
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.table = ChildTable(self.selector, journal, os.path.join(state_dir, protocol.OUTPUT_DIR),
                                self._send_exits, log)
        self.conns: dict[int, Connection] = {}       # by fd
        self.daemon: Connection | None = None
        self.stop_at: float | None = None            # monotonic: SIGKILL what is left
        self.give_up_at: float | None = None         # monotonic: exit even if some remain
        self.exit_status: int | None = None
        self._state_id = _identity(state_dir)
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "spawn": self.table.spawn, "signal": self.table.signal,
            "stdin_write": self.table.stdin_write, "stdin_close": self.table.stdin_close,
            "list": self.table.listing, "ack": self.table.ack, "resize": self.table.resize}
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _noop)
        self.selector.register(wake_r, selectors.EVENT_READ, self._on_signals)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self._on_accept)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        while self.exit_status is None:
            for key, mask in self.selector.select(self._timeout()):
                try:
                    key.data(mask)
                except Exception:
                    import traceback
                    log("keeper.bug", traceback=traceback.format_exc())
            self._on_time()
        return self.exit_status

    def _timeout(self) -> float | None:
        now = time.monotonic()
        waits = [c.deadline - now for c in self.conns.values() if not c.hello]
        due = self.table.next_index_due()
        if due is not None:
            waits.append(due - now)
        if self.stop_at is not None:
            waits.append(0.1)   # stopping: look at the orphans and deadlines often
        return max(0.0, min(waits)) if waits else None

    def _on_time(self) -> None:
        now = time.monotonic()
        self.table.flush_indexes(now)
        for conn in [c for c in self.conns.values() if not c.hello and c.deadline <= now]:
            self._drop(conn)
        if self.stop_at is not None:
            self._stopping(now)

    def _on_signals(self, mask: int) -> None:
        try:
            received = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        if signal.SIGTERM in received or signal.SIGINT in received:
            self._begin_stop()
        if signal.SIGCHLD in received:
            self.table.reap()

    # --- connections -------------------------------------------------------------------

    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        waiting = sum(1 for c in self.conns.values() if not c.hello)
        if uid != os.geteuid() or waiting >= MAX_UNGREETED:
            log("keeper.peer_refused", pid=pid, uid=uid, waiting=waiting)
            sock.close()
            return
        conn = Connection(sock, time.monotonic() + HELLO_TIMEOUT, pid)
        self.conns[conn.fd] = conn
        conn.events = selectors.EVENT_READ
        self.selector.register(conn.fd, conn.events, lambda mask: self._on_conn(conn, mask))

    def _on_conn(self, conn: Connection, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and not conn.flush():
            return self._drop(conn)
        if mask & selectors.EVENT_READ and not conn.closing and not conn.receive():
            return self._drop(conn)
        self._serve(conn)

    def _serve(self, conn: Connection) -> None:
        """Answer the complete requests received, while replies are not piling up.

        Replies are queued and sent together, as soon as REPLY_DELAY has passed since the
        first of them was queued: cheap requests (a bulk stop's signals) are answered in
        one send, while a spawn (a fork and an exec) is answered before the next one
        begins, so the daemon goes on with it meanwhile. Once more than PAUSE_AT wait,
        what the socket takes is sent, and requests are read on only if that drained
        them (else the connection waits to be writable, and this runs again from there).
        """
        since = time.monotonic()
        while not conn.closing and not conn.closed:
            if conn.outbuf and time.monotonic() - since > REPLY_DELAY:
                if not conn.flush():
                    return self._drop(conn)
                since = time.monotonic()
            if conn.paused:
                if not conn.flush():
                    return self._drop(conn)
                if conn.paused:
                    break
            try:
                line = conn.next_line()
            except OverflowError:
                conn.send({"seq": None, "ok": False, "errno": errno.EMSGSIZE,
                           "error": f"request line longer than {protocol.MAX_LINE} bytes"})
                conn.closing = True
                break
            if line is None:
                break
            self._handle(conn, line)
        if not conn.closed and conn.outbuf and not conn.flush():
            return self._drop(conn)
        self._update(conn)

    def _update(self, conn: Connection) -> None:
        """Register for what the connection waits on next; close it once its last words are out."""
        if conn.closed:
            return
        if conn.closing and not conn.outbuf:
            return self._drop(conn)
        events = (0 if conn.closing or conn.paused else selectors.EVENT_READ) | \
            (selectors.EVENT_WRITE if conn.outbuf else 0)
        if events != conn.events:   # closing or paused imply bytes to send: never 0
            conn.events = events
            self.selector.modify(conn.fd, events, self.selector.get_key(conn.fd).data)

    def _drop(self, conn: Connection) -> None:
        if conn.closed:
            return
        self.selector.unregister(conn.fd)
        del self.conns[conn.fd]
        if self.daemon is conn:
            self.daemon = None
        conn.close()

    def _send_exits(self, exits: list[dict[str, Any]]) -> None:
        """Exits are journalled by now; the daemon connection (if any) hears of them (all
        of one reap in one send)."""
        conn = self.daemon
        if conn is None:
            return
        for entry in exits:
            if not conn.queue({"event": "exit", **entry}):
                return self._drop(conn)
        if not conn.flush():
            return self._drop(conn)
        if conn.outbuf:
            self._update(conn)

    def _handle(self, conn: Connection, line: bytes) -> None:
        seq = None
        try:
            request = protocol.decode(line)
            seq = request.get("seq")
            op = request.get("op")
            if not conn.hello:
                return self._hello(conn, request)
            if op == "hello":
                raise RequestError("hello was already said on this connection", errno.EISCONN)
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise RequestError(f"unknown op {op!r}"[:200], errno.EOPNOTSUPP)
            reply = {"seq": seq, "ok": True, **handler(request)}
        except RequestError as exc:
            reply = {"seq": seq, "ok": False, "error": str(exc), "errno": exc.errno}
            conn.closing |= not conn.hello   # garbage instead of a hello: answered, then closed
        except Exception as exc:
            log("keeper.request_failed", error=repr(exc))
            reply = {"seq": seq, "ok": False, "error": f"internal error: {exc!r}", "errno": None}
        if not conn.queue(reply):   # sent with the other replies of this read (_serve)
            self._drop(conn)

    def _hello(self, conn: Connection, request: dict[str, Any]) -> None:
        version, state_dir = request.get("version"), request.get("state_dir")
        error = None
        if request.get("op") != "hello":
            error = "the first message must be hello"
        elif version != protocol.VERSION or type(version) is not int:
            error = f"this keeper speaks protocol version {protocol.VERSION}, not {version!r}"
        elif not isinstance(state_dir, str) or _identity(state_dir) != self._state_id:
            error = f"this keeper serves state dir {self.state_dir!r}, not {state_dir!r}"
        if error is not None:
            conn.send({"seq": request.get("seq"), "ok": False, "error": error, "errno": errno.EPROTO})
            conn.closing = True
            return
        old, self.daemon = self.daemon, conn
        conn.hello = True
        if old is not None:
            log("keeper.daemon_replaced", old_pid=old.peer_pid, new_pid=conn.peer_pid)
            old.send({"event": "replaced"})
            old.closing = True
            self._update(old)
        conn.send({"seq": request.get("seq"), "ok": True, "version": protocol.VERSION,
                   "pid": os.getpid(), "state_dir": self.state_dir})

    # --- stopping ------------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self.stop_at is not None:
            return
        log("keeper.stopping", children=len(self.table.children), grace=self.grace)
        self.table.accepting = False
        self.stop_at = time.monotonic() + self.grace
        self.table.signal_all(signal.SIGTERM)
        self._stopping(time.monotonic())

    def _stopping(self, now: float) -> None:
        assert self.stop_at is not None
        if not self.table.any_alive():
            return self._finish()
        if self.give_up_at is None and now >= self.stop_at:
            log("keeper.killing", children=len(self.table.children))
            self.table.signal_all(signal.SIGKILL)
            self.give_up_at = now + KILL_WAIT
        elif self.give_up_at is not None and now >= self.give_up_at:
            log("keeper.stop_incomplete", children=len(self.table.children))
            self._finish()

    def _finish(self) -> None:
        self.table.close_streams()
        for conn in list(self.conns.values()):
            conn.flush_blocking(1.0)
            self._drop(conn)
        self.exit_status = 0


def _noop(signum: int, frame: object) -> None:
    """Signals are read from the wakeup pipe; the handler only has to exist."""


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
