"""The children: their pidfds, the marker they carry, and the one reaper.

* **One reaper.** The daemon is a child subreaper. :meth:`Children.reap`
  (whenever a child's pidfd turns readable, and once a second) collects every
  exited child with ``waitpid(-1, WNOHANG)`` and dispatches by pid; orphaned
  grandchildren are reaped there too. No SIGCHLD handler: exits are seen through
  pidfds, and uvloop keeps SIGCHLD for itself; an orphan's zombie lasts at most a
  second (its exit is seen at once through the pidfd a stop holds on it).
  Re-adopted processes (left by an earlier daemon) are not our children: their
  pidfd alone says they ended, and their exit status is unknown.
* **The marker.** Every child is started with ``STABLEHAND_ID`` (its record's id)
  and ``STABLEHAND_INSTANCE`` (this registry's instance) in its environment, and
  without the daemon's own private variables. Descendants inherit it: that is how
  a restarted daemon recognises its processes and how a stop recognises orphans
  of a tree (:class:`Markers`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Any

from .. import oskit
from ..model import Process

# Environment variables a child must never inherit from the daemon.
_PRIVATE_ENV_PREFIXES = ("LISTEN_", "WATCHDOG_", "STABLEHAND_")
_PRIVATE_ENV_NAMES = frozenset({"NOTIFY_SOCKET"})
ID_VAR = "STABLEHAND_ID"
INSTANCE_VAR = "STABLEHAND_INSTANCE"


@dataclasses.dataclass(slots=True, eq=False)
class Child:
    """A live process the supervisor watches."""

    id: int
    pid: int
    ticks: int
    pidfd: int
    own: bool                                   # our child (we reap it) or re-adopted
    exited: asyncio.Future[oskit.ExitStatus | None]
    stdin_fd: int | None = None
    timer: asyncio.TimerHandle | None = None
    stdin_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    # A write waiting for the pipe to drain: its fd is registered with the loop, so the
    # fd must be unregistered before it is closed (see close_stdin).
    stdin_waiter: asyncio.Future[None] | None = None


class Markers:
    """Who this daemon's processes are: the instance they carry, the boot they ran in."""

    def __init__(self) -> None:
        self.instance = ""        # read (or made) from the registry at start
        self.boot_id = oskit.boot_id()
        # What every child inherits from the daemon's environment, read once.
        self._base_env = {k: v for k, v in os.environ.items()
                          if k not in _PRIVATE_ENV_NAMES and not k.startswith(_PRIVATE_ENV_PREFIXES)}

    def env(self, proc: Process) -> dict[str, str]:
        """The environment ``proc`` is started with: the daemon's public one, the
        caller's, and the marker."""
        env = self._base_env.copy()
        env.update(proc.env)
        env[ID_VAR] = str(proc.id)
        env[INSTANCE_VAR] = self.instance
        return env

    @staticmethod
    def read(pid: int) -> dict[str, str] | None:
        """The marker variables of ``pid`` (None if its environment cannot be read)."""
        return oskit.environ_marker(pid, (ID_VAR, INSTANCE_VAR))


ExitHandler = Callable[[Child, oskit.ExitStatus | None], None]


class Children:
    """Every child being watched, by record id, and our own (the reaped ones) by pid."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Any, on_exit: ExitHandler) -> None:
        self._loop = loop
        self._log = log
        self._on_exit = on_exit
        self.by_id: dict[int, Child] = {}
        self.by_pid: dict[int, Child] = {}          # our own children, by OS pid

    def get(self, process_id: int) -> Child | None:
        return self.by_id.get(process_id)

    def all(self) -> list[Child]:
        return list(self.by_id.values())

    def new(self, process_id: int, pid: int, ticks: int, pidfd: int, *, own: bool,
            stdin_fd: int | None = None) -> Child:
        return Child(id=process_id, pid=pid, ticks=ticks, pidfd=pidfd, own=own,
                     exited=self._loop.create_future(), stdin_fd=stdin_fd)

    def watch(self, child: Child) -> None:
        self.by_id[child.id] = child
        if child.own:
            self.by_pid[child.pid] = child
        self._loop.add_reader(child.pidfd, self._on_pidfd, child)

    def _on_pidfd(self, child: Child) -> None:
        if child.own:
            self.reap()
        else:  # re-adopted: not ours to reap; the pidfd alone says it ended
            self._exited(child, None)

    def reap(self) -> None:
        for pid, status in oskit.reap_all():
            child = self.by_pid.get(pid)
            if child is not None:
                self._exited(child, status)
            else:
                self._log.debug("orphan.reaped", pid=pid)

    def _exited(self, child: Child, status: oskit.ExitStatus | None) -> None:
        self.forget(child)
        child.exited.set_result(status)
        self._on_exit(child, status)

    def forget(self, child: Child) -> None:
        """Stop watching ``child``: close its pidfd and stdin, cancel its timeout."""
        if self.by_id.get(child.id) is child:
            del self.by_id[child.id]
        if self.by_pid.get(child.pid) is child:
            del self.by_pid[child.pid]
        if child.pidfd >= 0:
            self._loop.remove_reader(child.pidfd)
            oskit.close_fd(child.pidfd)
            child.pidfd = -1
        if child.timer is not None:
            child.timer.cancel()
        self.close_stdin(child)

    def close_stdin(self, child: Child) -> None:
        """Close a child's stdin pipe, first waking a write that waits on it.

        The waiting write's fd is registered with the loop (``add_writer``). Closing it
        while registered lets the number be reused by the next pipe or pidfd, and the
        loop then acts on the wrong file (uvloop aborts the daemon). So the fd leaves
        the loop first; the woken write finds the pipe closed and answers 409.
        """
        fd = child.stdin_fd
        if fd is None:
            return
        if child.stdin_waiter is not None:
            self._loop.remove_writer(fd)
            resolve(child.stdin_waiter)
            child.stdin_waiter = None
        child.stdin_fd = None
        oskit.close_fd(fd)


def resolve_once(loop: asyncio.AbstractEventLoop, fd: int, future: asyncio.Future[Any]) -> None:
    """A pidfd turned readable (its process exited): resolve and stop watching it."""
    loop.remove_reader(fd)
    if not future.done():
        future.set_result(None)


def resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
