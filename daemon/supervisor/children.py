"""The children as the daemon sees them: who they are, the marker they carry, how each ends.

* **Kept children.** The keeper (kept.py) is the parent and the only reaper of
  every child the daemon starts. Such a child is *kept*: the daemon holds no fd
  for it; its exit, with the exact status, arrives from the keeper
  (:meth:`Children.keeper_exit`), and signals to it go through the keeper.
* **Adopted children.** A child whose keeper was killed (or that a daemon finds
  without a keeper that knows it) is *adopted*: the daemon holds a pidfd, opened
  and then checked against the child's start ticks, and learns from it only
  *that* the child ended; its exit status is unknown.
* **The marker.** Every child is started with ``STABLEHAND_ID`` (its record's id)
  and ``STABLEHAND_INSTANCE`` (this registry's instance) in its environment, and
  without the daemon's own private variables. Descendants inherit it: that is how
  a restarted daemon recognises its processes and how a stop recognises orphans
  of a tree (:class:`Markers`). A managed record's runs also carry
  ``STABLEHAND_RUN`` (the run's number), so that stopping what one run left
  behind never takes an orphan of the next run of the same record.
* **The plain environment** (issue 20). A child's reader is usually a program (a
  model, a log), not a terminal: unless the start says ``plainEnv: false``, a
  record's env is given ``NO_COLOR=1``, ``TERM=dumb`` (``xterm-256color`` on a
  terminal), ``PAGER=cat`` and ``GIT_PAGER=cat`` under what the request sets
  (:func:`with_plain_env`). They go into the record's env when it is created, so
  every run of it (a managed restart, after a daemon restart) gets the same, and
  they override what the daemon itself inherited (a daemon started from a
  terminal has its TERM).

The daemon itself is no subreaper and reaps nothing but the keeper it started
(keeper/client.py): orphans of a tree are re-parented to the keeper.
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
RUN_VAR = "STABLEHAND_RUN"
PLAIN_ENV = {"NO_COLOR": "1", "TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat"}
TTY_TERM = "xterm-256color"


def with_plain_env(env: dict[str, str], *, tty: bool) -> dict[str, str]:
    """``env`` over the plain defaults (the module doc): what the request sets wins."""
    return {**PLAIN_ENV, **({"TERM": TTY_TERM} if tty else {}), **env}


@dataclasses.dataclass(slots=True, eq=False)
class Child:
    """A live process the supervisor watches."""

    id: int
    pid: int
    ticks: int
    pidfd: int                                  # adopted: ours to watch; kept: -1
    kept: bool                                  # the keeper's child, or adopted
    exited: asyncio.Future[oskit.ExitStatus | None]
    stdin_open: bool = False                    # a kept child's stdin pipe, held by the keeper
    timer: asyncio.TimerHandle | None = None
    stdin_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    ending: str | None = None                   # a managed run being stopped: why ("restarted"...)
    keeper_lost: bool = False                   # adopted because its keeper was killed
    run: int = 0                                # a managed run's number (its marker); 0: none


class Markers:
    """Who this daemon's processes are: the instance they carry, the boot they ran in."""

    def __init__(self) -> None:
        self.instance = ""        # read (or made) from the registry at start
        self.boot_id = oskit.boot_id()
        # What every child inherits from the daemon's environment, read once.
        self._base_env = {k: v for k, v in os.environ.items()
                          if k not in _PRIVATE_ENV_NAMES and not k.startswith(_PRIVATE_ENV_PREFIXES)}

    def env(self, proc: Process, run: int = 0) -> dict[str, str]:
        """The environment ``proc`` is started with: the daemon's public one, the
        caller's, and the marker (with ``run``, a managed run's number)."""
        env = self._base_env.copy()
        env.update(proc.env)
        env[ID_VAR] = str(proc.id)
        env[INSTANCE_VAR] = self.instance
        if run:
            env[RUN_VAR] = str(run)
        return env

    @staticmethod
    def read(pid: int) -> dict[str, str] | None:
        """The marker variables of ``pid`` (None if its environment cannot be read)."""
        return oskit.environ_marker(pid, (ID_VAR, INSTANCE_VAR, RUN_VAR))


def run_number(value: str | None) -> int | None:
    """A STABLEHAND_RUN value as a run number; None unless it is ASCII digits (it comes
    from a process's own environment, which the process may have set to anything)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def run_of(proc: Process, *, next_run: bool) -> int:
    """The number a managed record's run carries in its marker: the run about to be
    spawned (``next_run``) or the one running now; 0 for a record that is not managed."""
    state = proc.managed_state
    if proc.managed is None or state is None:
        return 0
    return state.run + 1 if next_run else state.run


ExitHandler = Callable[[Child, oskit.ExitStatus | None], None]


class Children:
    """Every child being watched, by record id; the kept ones also by OS pid."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: Any, on_exit: ExitHandler) -> None:
        self._loop = loop
        self._log = log
        self._on_exit = on_exit
        self.by_id: dict[int, Child] = {}
        self.by_pid: dict[int, Child] = {}          # kept children, by OS pid
        # Exits the keeper told of before the spawn's reply was handled (both can arrive
        # in one read): taken by watch(). Only for ids the caller knows are live.
        self._early: dict[int, oskit.ExitStatus] = {}

    def get(self, process_id: int) -> Child | None:
        return self.by_id.get(process_id)

    def all(self) -> list[Child]:
        return list(self.by_id.values())

    def new(self, process_id: int, pid: int, ticks: int, pidfd: int, *, kept: bool,
            stdin_open: bool = False, run: int = 0) -> Child:
        return Child(id=process_id, pid=pid, ticks=ticks, pidfd=pidfd, kept=kept,
                     exited=self._loop.create_future(), stdin_open=stdin_open, run=run)

    def watch(self, child: Child) -> None:
        self.by_id[child.id] = child
        if child.kept:
            self.by_pid[child.pid] = child
            early = self._early.pop(child.id, None)
            if early is not None:
                self._loop.call_soon(self._exited, child, early)
        else:
            self._loop.add_reader(child.pidfd, self._on_pidfd, child)

    def keeper_exit(self, process_id: int, status: oskit.ExitStatus) -> bool:
        """The keeper reaped a kept child. False if no kept child has that id (yet)."""
        child = self.by_id.get(process_id)
        if child is None or not child.kept:
            return False
        self._exited(child, status)
        return True

    def hold_exit(self, process_id: int, status: oskit.ExitStatus) -> None:
        """An exit that came before its child was watched (the spawn reply is being handled)."""
        self._early[process_id] = status

    def adopt(self, child: Child, pidfd: int) -> None:
        """A kept child whose keeper is gone: watch it through our own (verified) pidfd."""
        self.by_pid.pop(child.pid, None)
        child.kept, child.pidfd, child.stdin_open, child.keeper_lost = False, pidfd, False, True
        self._loop.add_reader(pidfd, self._on_pidfd, child)

    def _on_pidfd(self, child: Child) -> None:
        self._exited(child, None)   # adopted: the pidfd alone says it ended

    def _exited(self, child: Child, status: oskit.ExitStatus | None) -> None:
        if child.exited.done():
            return
        self.forget(child)
        child.exited.set_result(status)
        self._on_exit(child, status)

    def lost(self, child: Child) -> None:
        """A kept child that ended while no keeper watched it: its status is unknown."""
        child.keeper_lost = True
        self._exited(child, None)

    def forget(self, child: Child) -> None:
        """Stop watching ``child``: close its pidfd, cancel its timeout."""
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
        child.stdin_open = False


def resolve_once(loop: asyncio.AbstractEventLoop, fd: int, future: asyncio.Future[Any]) -> None:
    """A pidfd turned readable (its process exited): resolve and stop watching it."""
    loop.remove_reader(fd)
    if not future.done():
        future.set_result(None)


def resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
