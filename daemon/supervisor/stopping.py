"""Stopping a child's whole tree, and nothing but its tree.

* **Never signal a stranger.** A kept child (the keeper's) is signalled by the
  keeper through the pidfd it took at spawn, with its process group (safe while
  the leader is unreaped, and only the keeper reaps it); every other process of
  the tree, and an adopted leader, through a pidfd opened first and then checked
  against its start ticks.
* **No strays.** Stopping takes the whole tree: the group, the session,
  descendants by parent links and orphans re-parented to the keeper that carry the
  process's ``STABLEHAND_ID``. When a leader exits on its own, whatever it left
  in its process group is stopped too (:meth:`Trees.sweep`, as systemd does for
  a service's cgroup); a marked process the registry says should not exist is
  stopped at start-up (:meth:`Trees.stop_stray`).

This module knows processes, not records: what a stop means for a record (its
states, its writes) is in terminating.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from typing import Any

from .. import oskit
from ..config import Config
from ..keeper.client import KeeperError, KeeperGone
from .children import ID_VAR, INSTANCE_VAR, RUN_VAR, Child, Children, Markers, resolve_once, run_number
from .kept import KeeperLink

KILL_WAIT = 5.0          # after SIGKILL, how long to wait for the tree to vanish
ORPHAN_SETTLE = 0.25     # how long an orphan whose marker cannot be read may hold up a stop
ORPHAN_RECHECK = 0.002   # how often a stop looks again at such an orphan


@dataclasses.dataclass(slots=True)
class _Adopted:
    """The orphans re-parented to the keeper, as read in one turn of the loop."""

    # marker id -> (orphan, its run marker or None)
    by_id: dict[str, list[tuple[oskit.ProcInfo, str | None]]] = dataclasses.field(default_factory=dict)
    unsettled: bool = False   # an orphan first seen < ORPHAN_SETTLE ago could not be told


class Trees:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: Any, config: Config,
                 children: Children, markers: Markers, keeper: KeeperLink) -> None:
        self._loop = loop
        self._keeper = keeper
        self._log = log
        self._config = config
        self._children = children
        self._markers = markers
        self.stop_sets: dict[int, dict[int, int]] = {}    # id -> tree members being stopped
        self._adopted_now: _Adopted | None = None
        self._unsure_since: dict[tuple[int, int], float] = {}  # (pid, ticks) → first seen

    async def signal_tree(self, child: Child, sig: int, known: dict[int, int]) -> dict[int, int]:
        """Signal the leader (if unreaped), its group and every member of its tree.

        The leader first: a shell that waits for its children would otherwise see
        them die and exit 0 before its own signal arrives. A kept leader (and its
        group) is signalled by the keeper, and the keeper's reply awaited.
        ``known`` maps member pids to verified pidfds already held; new members
        are added to it. Returns it.
        """
        leader_reaped = child.exited.done()
        if not leader_reaped and child.kept:
            try:
                # False: it exited and was reaped (its exit event is on the way); its pid
                # may be anyone's already, so its tree is no longer walked by parent links.
                leader_reaped = not await self._keeper.signal(child.id, sig, group=True)
            except KeeperGone:
                leader_reaped = not self._signal_verified(child, sig)
            except KeeperError:
                leader_reaped = True
        elif not leader_reaped:  # adopted: reaped by someone else, so no killpg by pid
            oskit.pidfd_signal(child.pidfd, sig)
        leader_reaped = leader_reaped or child.exited.done()
        ours = self._children.by_pid
        for info in self._tree(child, leader_reaped):
            if info.pid not in known and info.pid not in ours:
                fd = oskit.open_verified_pidfd(info.pid, info.start_ticks)
                if fd is not None:
                    known[info.pid] = fd
        for fd in known.values():
            oskit.pidfd_signal(fd, sig)
        return known

    @staticmethod
    def _signal_verified(child: Child, sig: int) -> bool:
        """The keeper is gone: signal a kept leader through a pidfd checked against its start
        ticks (never a recycled pid). False if it is not there any more (or cannot be told)."""
        fd = oskit.open_verified_pidfd(child.pid, child.ticks if child.ticks >= 0 else None)
        if fd is None:
            return False
        try:
            return oskit.pidfd_signal(fd, sig)
        finally:
            oskit.close_fd(fd)

    def _tree(self, child: Child, leader_reaped: bool) -> list[oskit.ProcInfo]:
        """The members of a child's tree, the leader excluded.

        For a kept child this walks parent links only: the keeper is a
        subreaper, so every process the leader started is still its descendant
        or has been re-parented to the keeper (an orphan that carries the
        record's STABLEHAND_ID). Group and session members are among those.
        An adopted leader is under nobody we know, so its tree is read from a
        full scan of /proc (group, session and descendants).
        """
        if not child.kept:
            table = oskit.proc_table()
            return oskit.tree_of(child.pid, child.ticks, leader_reaped, table)
        members = [] if leader_reaped else oskit.descendants(child.pid, child.ticks)
        for orphan in self._orphans_of(child):
            members.append(orphan)
            members += oskit.descendants(orphan.pid, orphan.start_ticks)
        return members

    def _orphans_of(self, child: Child) -> list[oskit.ProcInfo]:
        """The keeper's children that are not leaders but carry this child's STABLEHAND_ID,
        except, for a managed run, those of a later run (STABLEHAND_RUN above its own):
        stopping a run takes what it and earlier runs left, never the next run's."""
        return [info for info, their_run in self._adopted().by_id.get(str(child.id), ())
                if not child.run or (run := run_number(their_run)) is None or run <= child.run]

    async def has_late_orphans(self, child: Child) -> bool:
        """Whether orphans of this record are left once a stop's pass is over.

        An orphan caught inside ``execve`` shows no environment for a moment (see
        :func:`oskit.environ_marker`), so while a newly seen orphan cannot be told,
        this looks again every ORPHAN_RECHECK for up to ORPHAN_SETTLE from when it
        was first seen. An orphan that stays unreadable (an emptied environment,
        another user's setuid program) is never signalled: it is not known to be
        ours. It holds up only the stops that see it in its first ORPHAN_SETTLE.
        """
        while True:
            adopted = self._adopted()
            if self._orphans_of(child):
                return True
            if not adopted.unsettled:
                return False
            await asyncio.sleep(ORPHAN_RECHECK)

    def _adopted(self) -> _Adopted:
        """Orphans re-parented to the keeper, by the STABLEHAND_ID they carry.

        The keeper's children list holds every child it runs, so reading it per
        stop made a mass stop quadratic. It is read at most once per turn of the
        event loop and shared by every stop begun in that turn. A process
        orphaned after the read is caught by the pass that a stop makes once
        the leader is gone (terminating.py).
        """
        if self._adopted_now is None:
            now = self._loop.time()
            adopted = _Adopted()
            unsure: dict[tuple[int, int], float] = {}
            keeper = self._keeper.pid
            for pid in oskit.adopted_children(keeper) if keeper else ():
                if pid in self._children.by_pid:
                    continue
                info = oskit.proc_info(pid)
                if info is None or info.zombie:
                    continue
                marker = self._markers.read(pid)
                if marker is None:
                    key = (pid, info.start_ticks)
                    first_seen = unsure[key] = self._unsure_since.get(key, now)
                    adopted.unsettled |= now - first_seen < ORPHAN_SETTLE
                elif ID_VAR in marker and marker.get(INSTANCE_VAR) == self._markers.instance:
                    adopted.by_id.setdefault(marker[ID_VAR], []).append((info, marker.get(RUN_VAR)))
            self._unsure_since = unsure
            self._adopted_now = adopted
            self._loop.call_soon(self._forget_adopted)
        return self._adopted_now

    def _forget_adopted(self) -> None:
        self._adopted_now = None

    async def stop_members(self, child: Child, members: dict[int, int],
                           grace: float | None) -> oskit.ExitStatus | None:
        """Wait up to ``grace`` (None: forever) for the tree to go, then SIGKILL what is left.

        Closes the members' pidfds; returns the leader's exit status if it is known.
        """
        try:
            if not await self._wait_gone(child, members, grace):
                self._log.info("process.escalating", process_id=child.id, signal="SIGKILL")
                await self.signal_tree(child, signal.SIGKILL, members)
                if not await self._wait_gone(child, members, KILL_WAIT):
                    self._log.warning("process.unkillable", process_id=child.id)
        finally:
            for fd in members.values():
                oskit.close_fd(fd)
        return child.exited.result() if child.exited.done() else None

    async def _wait_gone(self, child: Child, members: dict[int, int], timeout: float | None) -> bool:
        waits: list[asyncio.Future[Any]] = [child.exited]
        readers = []
        for fd in members.values():
            future = self._loop.create_future()
            self._loop.add_reader(fd, resolve_once, self._loop, fd, future)
            readers.append(fd)
            waits.append(future)
        try:
            pending = [w for w in waits if not w.done()]
            if pending:
                _, pending_set = await asyncio.wait(pending, timeout=timeout)
                return not pending_set
            return True
        finally:
            for fd in readers:
                self._loop.remove_reader(fd)

    async def kill_stopping(self, process_id: int) -> None:
        """SIGKILL the tree of a stop under way now, without waiting for its grace."""
        child = self._children.get(process_id)
        members = self.stop_sets.get(process_id)
        if child is not None and members is not None:
            await self.signal_tree(child, signal.SIGKILL, members)

    async def sweep(self, child: Child) -> None:
        """Stop what an exited leader left behind in its group."""
        members = await self.signal_tree(child, signal.SIGTERM, {})
        if members:
            self._log.info("process.stragglers", process_id=child.id, count=len(members))
        await self.stop_members(child, members, self._config.grace)

    async def stop_stray(self, process_id: int, info: oskit.ProcInfo) -> None:
        """A process of ours that the registry says should not exist: stop it."""
        pidfd = oskit.open_verified_pidfd(info.pid, info.start_ticks)
        if pidfd is None:
            return
        self._log.warning("process.stray", process_id=process_id, pid=info.pid)
        child = self._children.new(process_id, info.pid, info.start_ticks, pidfd, kept=False)
        self._loop.add_reader(pidfd, resolve_once, self._loop, pidfd, child.exited)
        try:
            members = await self.signal_tree(child, signal.SIGTERM, {})
            await self.stop_members(child, members, self._config.grace)
        finally:
            self._loop.remove_reader(pidfd)
            oskit.close_fd(pidfd)

    async def signal_unmanaged(self, pid: int, sig: int, grace: float | None = None) -> bool:
        """Signal a process Stablehand did not start (only with ``allow_unmanaged``).

        With ``grace``: wait that long for it to exit, then SIGKILL and wait again.
        Returns whether it is gone (True without ``grace``). Raises
        ProcessLookupError / PermissionError like kill(2).
        """
        pidfd = oskit.open_pidfd(pid)
        try:
            oskit.send_via_pidfd(pidfd, sig)
            if grace is None:
                return True
            gone: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_reader(pidfd, resolve_once, self._loop, pidfd, gone)
            try:
                await asyncio.wait_for(asyncio.shield(gone), grace)
                return True
            except TimeoutError:
                oskit.pidfd_signal(pidfd, signal.SIGKILL)
            try:
                await asyncio.wait_for(gone, KILL_WAIT)
                return True
            except TimeoutError:
                return False
            finally:
                if not gone.done():
                    self._loop.remove_reader(pidfd)
        finally:
            oskit.close_fd(pidfd)
