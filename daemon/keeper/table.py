"""The keeper's children: what it does for each between spawn and the journalled exit.

The table owns every fd a child costs the keeper and registers each in the
keeper's selector: the pidfd (readable = exited), each captured pipe (output to
pump) and a stdin pipe while bytes wait in its buffer. An fd is always
unregistered before it is closed: a closed fd's number is soon reused, and the
selector must not still hold it.

The only reaper is :meth:`ChildTable.reap` (``waitpid(-1, WNOHANG)``, dispatched
by pid): a child's exit is handled when its pidfd turns readable, an orphan's
(a grandchild re-parented to the keeper, the subreaper) when SIGCHLD arrives;
an orphan's exit is reaped and forgotten. For each exit: the pipes are drained
of what they hold (so the daemon, told of the exit, reads all the output; a
grandchild still holding a pipe keeps it pumped until EOF), the exit is
appended to the journal and fsynced (all exits of one turn together) and only
then handed to ``on_exits`` for sending.

The requests' fields are validated here (through :mod:`.protocol`) before
anything is opened or spawned.
"""

from __future__ import annotations

import binascii
import errno
import os
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

from . import protocol
from .children import Child, spawn
from .journal import Journal
from .protocol import RequestError
from .pump import CHUNK, OutputStream

DRAIN_AT_EXIT = 1024 * 1024      # most read from a pipe when its child exits
Log = Callable[..., None]


class ChildTable:
    def __init__(self, selector: selectors.BaseSelector, journal: Journal, output_dir: str,
                 on_exits: Callable[[list[dict[str, Any]]], None], log: Log) -> None:
        self.selector = selector
        self.journal = journal
        self.output_dir = output_dir
        self.on_exits = on_exits
        self.log = log
        self.children: dict[int, Child] = {}         # live, by id
        self.by_pid: dict[int, Child] = {}
        self.streams: set[OutputStream] = set()      # open: of a live child, or after its exit
        self.indexing: set[OutputStream] = set()     # with an index record pending
        self.buf = bytearray(CHUNK)                  # the one read buffer of every pump
        self.accepting = True

    # --- requests ------------------------------------------------------------------------

    def spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        child_id = protocol.child_id(request)
        argv = protocol.string_list(request.get("argv"), "argv")
        env = protocol.environment(request.get("env"))
        cwd = request.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or "\0" in cwd):
            raise RequestError("cwd must be a string or null", errno.EINVAL)
        stdin = protocol.choice(request, "stdin", ("null", "pipe"))
        modes = {name: protocol.choice(request, name, ("capture", "discard"))
                 for name in ("stdout", "stderr")}
        cap = protocol.optional_cap(request.get("max_output_bytes"))
        tty = protocol.window_size(request["tty"]) if request.get("tty") is not None else None
        if tty is not None:   # the terminal is stdin, stdout and stderr: captured in .stdout
            stdin, modes = "pipe", {"stdout": "capture", "stderr": "discard"}
        if not self.accepting:
            raise RequestError("the keeper is stopping", errno.ESHUTDOWN)
        if child_id in self.children or child_id in self.journal.pending:
            raise RequestError(f"id {child_id} is in use", errno.EEXIST)
        os.makedirs(self.output_dir, mode=0o700, exist_ok=True)
        outputs = {name: os.path.join(self.output_dir, f"{child_id}.{name}") if mode == "capture"
                   else None for name, mode in modes.items()}
        child = spawn(child_id, argv, env, cwd, stdin, outputs, cap, tty)
        self.children[child_id] = child
        self.by_pid[child.pid] = child
        self.selector.register(child.pidfd, selectors.EVENT_READ, self._on_pidfd)
        for stream in child.streams.values():
            self.streams.add(stream)
            self.selector.register(stream.pipe, selectors.EVENT_READ,
                                   lambda mask, s=stream: self._on_output(s))
        return {"pid": child.pid, "start_ticks": child.start_ticks}

    def signal(self, request: dict[str, Any]) -> dict[str, Any]:
        sig = protocol.signal_number(request.get("sig"))
        if protocol.child_id(request) in self.journal.pending:
            return {"delivered": False}   # exited, not yet acknowledged
        return {"delivered": self._child(request).signal(sig, request.get("group") is True)}

    def stdin_write(self, request: dict[str, Any]) -> dict[str, Any]:
        child = self._child(request)
        if child.stdin is None:
            raise RequestError(f"child {child.id} has no stdin pipe", errno.EBADF)
        data = request.get("data")
        try:
            raw = binascii.a2b_base64(data.encode("ascii") if isinstance(data, str) else b"\0")
        except (binascii.Error, UnicodeEncodeError):
            raise RequestError("data must be base64", errno.EINVAL) from None
        written = child.stdin.write(raw)
        self._watch_stdin(child)
        return {"written": written, "buffered": len(child.stdin.buffer)}

    def stdin_close(self, request: dict[str, Any]) -> dict[str, Any]:
        child = self._child(request)
        if child.stdin is None:
            raise RequestError(f"child {child.id} has no stdin pipe", errno.EBADF)
        child.stdin.closing = True
        self._watch_stdin(child)
        return {}

    def resize(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set a terminal's window size; the kernel sends its foreground group SIGWINCH."""
        rows, cols = protocol.window_size(request)
        self._child(request).resize(rows, cols)
        return {}

    def listing(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"children": [c.describe() for c in self.children.values()],
                "exits": list(self.journal.pending.values())}

    def ack(self, request: dict[str, Any]) -> dict[str, Any]:
        ids = request.get("ids")
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):
            raise RequestError("ids must be a list of integers", errno.EINVAL)
        return {"acked": self.journal.ack(ids)}

    def _child(self, request: dict[str, Any]) -> Child:
        child_id = protocol.child_id(request)
        child = self.children.get(child_id)
        if child is None:
            raise RequestError(f"no live child with id {child_id}", errno.ESRCH)
        return child

    # --- stdin and output ------------------------------------------------------------------

    def _watch_stdin(self, child: Child) -> None:
        """Wait for the stdin pipe to be writable while bytes are buffered; close when asked."""
        stdin = child.stdin
        assert stdin is not None
        registered = stdin.fd >= 0 and stdin.fd in self.selector.get_map()
        if stdin.fd >= 0 and stdin.buffer:
            if not registered:
                self.selector.register(stdin.fd, selectors.EVENT_WRITE,
                                       lambda mask: self._on_stdin(child))
            return
        if registered:
            self.selector.unregister(stdin.fd)
        stdin.flush()   # nothing buffered: closes now if asked to

    def _on_stdin(self, child: Child) -> None:
        stdin = child.stdin
        assert stdin is not None
        self.selector.unregister(stdin.fd)
        stdin.flush()
        self._watch_stdin(child)

    def _on_output(self, stream: OutputStream) -> None:
        if not stream.pump(self.buf):
            self._close_stream(stream)
        elif stream.pending_end >= 0:
            self.indexing.add(stream)

    def _close_stream(self, stream: OutputStream) -> None:
        if not stream.closed:
            self.selector.unregister(stream.pipe)
            self.indexing.discard(stream)
            self.streams.discard(stream)
            stream.close()

    def next_index_due(self) -> float | None:
        """Monotonic time when the next pending index record is due, or None."""
        return min((s.index_due() or 0 for s in self.indexing), default=None)

    def flush_indexes(self, now: float) -> None:
        for stream in [s for s in self.indexing if (s.index_due() or 0) <= now]:
            stream.flush_index()
            self.indexing.discard(stream)

    def close_streams(self) -> None:
        """At the keeper's exit: what the pipes still hold, then close everything."""
        for stream in list(self.streams):
            stream.pump(self.buf, DRAIN_AT_EXIT)
            self._close_stream(stream)

    # --- exits -----------------------------------------------------------------------------

    def _on_pidfd(self, mask: int) -> None:
        self.reap()

    def reap(self) -> None:
        exits = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.by_pid.pop(pid, None)
            if child is not None:   # else an orphan re-parented to the keeper: nothing to tell
                exits.append(self._exited(child, status))
        if not exits:
            return
        try:
            self.journal.append(exits)
        except OSError as exc:   # told anyway: kept in memory for list, lost by a keeper crash
            self.log("keeper.journal_failed", error=str(exc))
        self.on_exits(exits)

    def _exited(self, child: Child, status: int) -> dict[str, Any]:
        del self.children[child.id]
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        child.close_tty()
        if child.stdin is not None:
            if child.stdin.fd >= 0 and child.stdin.fd in self.selector.get_map():
                self.selector.unregister(child.stdin.fd)
            child.stdin.close()
        entry: dict[str, Any] = {"id": child.id, "pid": child.pid,
                                 "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                                 "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                                 "time": time.time()}
        for name in ("stdout", "stderr"):
            stream = child.streams.get(name)
            if stream is not None and not stream.pump(self.buf, DRAIN_AT_EXIT):
                self._close_stream(stream)   # else a grandchild holds it: pumped until EOF
            elif stream is not None:
                stream.flush_index()
            entry[f"{name}_dropped"] = stream.dropped if stream else 0
            entry[f"{name}_lost"] = stream.lost if stream else 0
        return entry

    # --- stopping everything -------------------------------------------------------------

    def signal_all(self, sig: int) -> None:
        """Each child's process group, and every orphan re-parented to the keeper.

        An orphan is the keeper's unreaped child, and only this loop reaps: its
        pid cannot be recycled between reading it and opening its pidfd.
        """
        for child in list(self.children.values()):
            child.signal(sig, group=True)
        for pid in self.orphans():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(fd, sig)
            except OSError:
                pass
            finally:
                os.close(fd)

    def any_alive(self) -> bool:
        self.reap()
        return bool(self.by_pid) or bool(self.orphans())

    def orphans(self) -> list[int]:
        """Processes re-parented to the keeper that are not children it spawned."""
        pid = os.getpid()
        try:
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as handle:
                pids = [int(p) for p in handle.read().split()]
        except (OSError, ValueError):
            return []
        return [p for p in pids if p not in self.by_pid]
