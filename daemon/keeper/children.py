"""Spawning a child and holding what the keeper keeps of it: pidfd, stdin, output streams.

Spawn uses ``subprocess.Popen`` for its careful fork/exec error reporting (which
file was missing, whether chdir failed) with ``start_new_session=True`` (each child
leads its own session and process group), ``close_fds`` and no ``preexec_fn``
(but for a terminal, below). The Popen object is disarmed (``returncode`` set)
so its finaliser never reaps: the keeper's loop is the only reaper. The pidfd is
opened right after: the child is unreaped, so its pid cannot have been recycled
and the pidfd is certain to name it.

Per child the keeper holds: the pidfd (exit notification, signals); for each
captured stream the pipe's read end, the stream file and its index; and, with
``stdin: "pipe"``, the pipe's write end. ``discard`` gives the child ``/dev/null``
directly; nothing is held for it.

A terminal (``tty``). The keeper opens a pty pair (``os.openpty``, whose slave
is opened ``O_NOCTTY``: the keeper, a session leader, never acquires it) and
gives the child the slave as fds 0, 1 and 2. The child must also make it its
controlling terminal (else no job control, no ``^C`` as SIGINT, no SIGWINCH).
``start_new_session`` gives it a session, but a session leader only gains a
controlling terminal by opening a tty without ``O_NOCTTY`` or by ``TIOCSCTTY``,
and ``Popen`` does neither, so a terminal child gets one ``preexec_fn``:
``ioctl(0, TIOCSCTTY, 0)``, run after ``setsid`` and the ``dup2``s. The usual
objection to ``preexec_fn`` (a fork of a threaded process may deadlock in the
child on a lock another thread held) does not apply: the keeper is
single-threaded by design (it never imports asyncio or threading) and the
function only calls ``ioctl``. The daemon, which is threaded, never does this.
Pipe children keep Popen's ``vfork`` path (no ``preexec_fn``). The window size
is set on the master before the fork, so the child starts with it.

The keeper holds three descriptors of the master (``dup``s of one open file,
so all non-blocking): the output stream's (closed at EOF: ``EIO`` once every
slave fd is closed), the stdin writer's (written like a stdin pipe, closed by
``stdin_close``, which sends nothing to the terminal: a program wanting EOF is
sent ``^D``), and the control one, kept until the exit, for ``resize``.

A child's start ticks (field 22 of ``/proc/<pid>/stat``, its identity beside the
pid) are the fork's ``CLOCK_BOOTTIME`` in clock ticks. The keeper reads that clock
before and after ``Popen``: when both readings fall in the same tick (at 100 ticks a
second, about 96% of pipe spawns and 80% of terminal ones, whose fork is slower), that
tick is the child's and /proc is not read.
Reading /proc right after a spawn was the keeper's costliest step in a churn of
short children: the read holds a reference to the child's memory map, and when the
child exits meanwhile the reader pays for tearing it down (p50 60 µs, p90 0.7 ms
in B4). Across a tick boundary, /proc is read as before.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from typing import Any

from .protocol import STDIN_BUFFER, RequestError
from .pump import OutputStream


class StdinPipe:
    """The write end of a child's stdin, written without blocking, with a bounded buffer.

    A write is accepted whole (written now, or partly buffered) or refused whole:
    EAGAIN when the buffer would pass :data:`STDIN_BUFFER` (the daemon answers
    503), EPIPE once the child closed its end. A close waits for the buffer to
    drain, so the child sees every accepted byte before EOF.
    """

    __slots__ = ("broken", "buffer", "closing", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closing = False
        self.broken = False

    @property
    def open(self) -> bool:
        return self.fd >= 0 and not self.closing

    def write(self, data: bytes) -> int:
        if self.broken:
            raise RequestError("the process closed its stdin", errno.EPIPE)
        if not self.open:
            raise RequestError("stdin is closed", errno.EPIPE)
        if len(self.buffer) + len(data) > STDIN_BUFFER:
            raise RequestError(f"the process is not reading its stdin ({len(self.buffer)} bytes "
                               "waiting)", errno.EAGAIN)
        if self.buffer:
            self.buffer += data
        else:
            written = self._write(data)
            if self.broken:
                raise RequestError("the process closed its stdin", errno.EPIPE)
            self.buffer += data[written:]
        return len(data)

    def flush(self) -> None:
        """Called when the pipe is writable: move the buffer on; close when asked and empty."""
        if self.buffer and self.fd >= 0:
            del self.buffer[:self._write(self.buffer)]
        if self.closing and not self.buffer:
            self.close()

    def _write(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError:   # EPIPE: the reader is gone; whatever was buffered is lost
            self.broken = True
            self.buffer.clear()
            self.close()
            return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.closing = True


class Child:
    __slots__ = ("id", "pid", "pidfd", "start_ticks", "stdin", "streams", "tty")

    def __init__(self, child_id: int, pid: int, pidfd: int, start_ticks: int | None,
                 stdin: StdinPipe | None, streams: dict[str, OutputStream],
                 tty: int | None = None) -> None:
        self.id = child_id
        self.pid = pid
        self.pidfd = pidfd
        self.start_ticks = start_ticks
        self.stdin = stdin
        self.streams = streams
        self.tty = tty          # the control fd of the pty master, until the exit

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "pid": self.pid, "start_ticks": self.start_ticks,
                                "stdin_open": self.stdin is not None and self.stdin.open,
                                "tty": self.tty is not None}
        for name in ("stdout", "stderr"):
            stream = self.streams.get(name)
            info[f"{name}_dropped"] = stream.dropped if stream else 0
            info[f"{name}_lost"] = stream.lost if stream else 0
        return info

    def resize(self, rows: int, cols: int) -> None:
        if self.tty is None:
            raise RequestError(f"child {self.id} has no terminal", errno.EBADF)
        set_window_size(self.tty, rows, cols)

    def close_tty(self) -> None:
        if self.tty is not None:
            os.close(self.tty)
            self.tty = None

    def signal(self, sig: int, group: bool) -> bool:
        """Signal the child (and its group) while it is unreaped. False if it has exited.

        Safe: an unreaped child's pid, and so its process group id, cannot be recycled.
        """
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            return False
        if group:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass   # the leader left its group and nothing else is in it
        return True


_NS_PER_TICK, _EXACT = divmod(1_000_000_000, os.sysconf("SC_CLK_TCK"))


def ticks_between(not_before_ns: int, not_after_ns: int) -> int | None:
    """The start ticks of a child forked between two CLOCK_BOOTTIME readings, if both fall
    in one tick (the kernel's ``nsec_to_clock_t`` of the fork's boot time), else None."""
    if _EXACT != 0:   # a tick rate that does not divide a second: the kernel rounds otherwise
        return None
    first, last = not_before_ns // _NS_PER_TICK, not_after_ns // _NS_PER_TICK
    return first if first == last else None


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: the kernel's start time, the child's identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child, after setsid and the dup2s: fd 0 (the slave) becomes its controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn(child_id: int, argv: list[str], env: dict[str, str], cwd: str | None, stdin: str,
          outputs: dict[str, str | None], cap: int | None,
          tty: tuple[int, int] | None = None) -> Child:
    """Start a child. ``outputs`` maps stdout/stderr to a file path, or None for /dev/null.

    With ``tty`` (rows, cols) the child runs on a new pty: ``outputs["stdout"]``
    (required) receives the terminal's bytes, ``stdin`` and ``outputs["stderr"]``
    are ignored. Raises RequestError with the reason (the message the record's
    ``error`` gets).
    """
    held: list[int] = []          # fds to close whatever happens (the child's ends)
    ours: list[int] = []          # fds to close if the spawn fails
    streams: dict[str, OutputStream] = {}
    child_ends: dict[str, int] = {}
    stdin_read = stdin_write = control = None
    if tty is not None:
        outputs = {"stdout": outputs["stdout"]}
    try:
        if tty is not None:
            master, slave = os.openpty()
            held.append(slave)
            ours.append(master)
            set_window_size(master, *tty)
            os.set_blocking(master, False)
            stdin_write = os.dup(master)
            ours.append(stdin_write)
            control = os.dup(master)
            ours.append(control)
            path = outputs["stdout"]
            assert path is not None
            try:
                streams["stdout"] = OutputStream(master, path, cap)
            except OSError as exc:
                raise RequestError(f"cannot open output file {path!r}: {exc.strerror}",
                                   exc.errno) from None
            stdin_read = child_ends["stdout"] = child_ends["stderr"] = slave
            outputs = {}
        for name, path in outputs.items():
            if path is None:
                continue
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            held.append(write_end)
            ours.append(read_end)
            os.set_blocking(read_end, False)
            try:
                streams[name] = OutputStream(read_end, path, cap)
            except OSError as exc:
                raise RequestError(f"cannot open output file {path!r}: {exc.strerror}",
                                   exc.errno) from None
            child_ends[name] = write_end
        if stdin == "pipe" and tty is None:
            stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
            held.append(stdin_read)
            ours.append(stdin_write)
            os.set_blocking(stdin_write, False)
        try:
            forked_not_before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL if stdin_read is None else stdin_read,
                stdout=child_ends.get("stdout", subprocess.DEVNULL),
                stderr=child_ends.get("stderr", subprocess.DEVNULL),
                cwd=cwd, env=env, start_new_session=True, close_fds=True,
                preexec_fn=_take_terminal if tty is not None else None)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if cwd is not None and exc.filename == cwd:
                raise RequestError(f"cannot change to directory {cwd!r}: {reason}", exc.errno) from None
            raise RequestError(f"cannot execute {argv[0]!r}: {reason}", exc.errno) from None
        except (ValueError, TypeError) as exc:
            raise RequestError(f"cannot start {argv[0]!r}: {exc}", errno.EINVAL) from None
        except subprocess.SubprocessError as exc:   # TIOCSCTTY failed in the child
            raise RequestError(f"cannot start {argv[0]!r} on a terminal: {exc}", errno.EIO) from None
    except BaseException:
        for stream in streams.values():
            stream.close()   # closes its pipe too
        for fd in ours:
            if not any(s.pipe == fd for s in streams.values()):
                os.close(fd)
        raise
    finally:
        for fd in held:
            os.close(fd)
    forked_not_after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    proc.returncode = 0   # disarm Popen.__del__: the keeper's loop is the only reaper
    pidfd = os.pidfd_open(proc.pid)
    ticks = ticks_between(forked_not_before, forked_not_after)
    return Child(child_id, proc.pid, pidfd, start_ticks(proc.pid) if ticks is None else ticks,
                 StdinPipe(stdin_write) if stdin_write is not None else None, streams, control)
