"""A record's way to idle after a kill or its timeout: the ``terminating`` state.

A kill of a queued record cancels it (idle/canceled once that is committed). A
kill of a running one, or its timeout, commits ``terminating`` first and only
then signals its tree (stopping.py), escalates to SIGKILL after the grace, and
makes the record idle once the whole tree is gone.

A refused write undoes the request's intent (issue 15): a kill whose
``terminating`` (or a queued record's ``canceled``) cannot be committed is
undone in memory (:meth:`ProcessTable.undo`), no signal is sent, and the process
keeps running (or goes back to its place in the queue); the request gets 503. A
timeout whose ``terminating`` cannot be committed is tried again EXPIRE_RETRY
later. While the daemon shuts down, a stop goes on whatever the disk says: its
end is saved when storage allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .. import oskit
from ..errors import ApiError, Conflict
from ..model import STOPPABLE, Event, Process, State, StopReason, now_iso, stopped_event
from ..registry import RegistryError, StorageError
from .children import Child

if TYPE_CHECKING:
    from .running import Runner

LATE_ORPHAN_PASSES = 3   # a stop's passes over its tree (see run)
EXPIRE_RETRY = 1.0       # a timeout whose stop could not be committed is tried again after this


@dataclasses.dataclass(slots=True)
class _StopFields:
    """A running record's fields that a stop changes: what undoing a refused stop restores."""

    state: State
    stop_reason: StopReason | None
    stop_requested_at: str | None
    stop_grace: float | None
    stop_signal: str | None

    @classmethod
    def of(cls, proc: Process) -> _StopFields:
        return cls(proc.state, proc.stop_reason, proc.stop_requested_at, proc.stop_grace,
                   proc.stop_signal)

    def restore(self, proc: Process) -> None:
        """Put back the stop columns (the state is the table's to put back)."""
        proc.stop_reason, proc.stop_requested_at = self.stop_reason, self.stop_requested_at
        proc.stop_grace, proc.stop_signal = self.stop_grace, self.stop_signal


class Terminating:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._table = runner.table
        self._trees = runner.trees
        self._children = runner.children
        self._log = runner.log

    async def stop(self, proc: Process, grace: float | None, sig: int, escalate: bool) -> Process:
        """Kill/stop a live record: queued → idle/canceled; running → terminating.

        Returns the record as the kill left it (terminating, or idle/canceled once
        committed). Conflict when it is already terminating (or idle).
        """
        runner = self._runner
        if proc.state not in STOPPABLE:
            raise Conflict(f"process {proc.id} is already {proc.state.value}")
        if proc.state is State.QUEUED:
            self._table.queue.remove(proc.id)
            return await asyncio.shield(self.cancel(proc))
        if proc.id in runner.abandoned:
            raise Conflict(f"process {proc.id} is already being stopped: "
                           "its start could not be recorded")
        grace = runner.grace_of(proc) if grace is None else grace
        commit = self.begin(proc, StopReason.KILL, grace if escalate else None, sig)
        snapshot = proc.copy()
        try:
            await asyncio.shield(commit)
        except StorageError as exc:  # undone by run: still running, nothing was sent
            raise StorageError(f"{exc.message}; process {proc.id} was not stopped") from None
        return snapshot

    def cancel(self, proc: Process) -> asyncio.Task[Process]:
        """Cancel a queued record already taken off the queue (a bulk stop takes many off
        in one pass): idle/canceled once committed, in an owned task that also puts it
        back in the queue if the write is refused."""
        self._table.apply(proc, Event.KILL)
        proc.completed_at = now_iso()
        commit = self._runner.write(proc, state=proc.state, exit_state=proc.exit_state,
                                    completed_at=proc.completed_at)
        return self._runner.tasks.spawn(self._canceled(proc, commit))

    async def _canceled(self, proc: Process, commit: asyncio.Future[None]) -> Process:
        """A queued record was canceled: idle once that is committed, else back in the queue."""
        runner = self._runner
        try:
            await commit
        except RegistryError as exc:
            self._table.undo(proc, Event.KILL, State.QUEUED)
            proc.completed_at = None
            runner.unsaved.mark(proc)  # whatever raced the failure is written over
            self._table.requeue(proc)
            runner.admit()
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc.message}; process {proc.id} is still queued") from None
            raise
        await runner.finished(proc, done_future())
        return proc.copy()

    def expire(self, process_id: int) -> None:
        """The timer of a record's own ``timeout`` fired."""
        proc = self._table.get(process_id)
        runner = self._runner
        if proc is not None and proc.state is State.RUNNING and process_id not in runner.abandoned:
            self._log.info("process.timeout", process_id=process_id, timeout=proc.timeout)
            self.begin(proc, StopReason.TIMEOUT, runner.grace_of(proc), signal.SIGTERM)

    def begin(self, proc: Process, reason: StopReason, grace: float | None,
              sig: int) -> asyncio.Future[None]:
        """Commit ``terminating``, then (in an owned task) signal and escalate.

        A grace of 0 means no grace at all: the first signal is SIGKILL. A grace
        of None means never escalate (psys's SIGTERM-only route).
        """
        runner = self._runner
        if grace == 0:
            sig = signal.SIGKILL
        before = _StopFields.of(proc)
        child = self._children.get(proc.id)
        if proc.managed is not None:
            runner.managing.stopping(proc)   # no next run: the end is for good
        self._table.apply(proc, Event.KILL if reason is StopReason.KILL else Event.EXPIRE)
        proc.stop_reason, proc.stop_requested_at = reason, now_iso()
        proc.stop_grace, proc.stop_signal = grace, oskit.signal_name(sig)
        commit = runner.write(
            proc, state=proc.state, stop_reason=reason, stop_requested_at=proc.stop_requested_at,
            stop_grace=grace, stop_signal=proc.stop_signal)
        runner.tasks.spawn(self.run(proc, commit, sig, grace, (before, child)))
        return commit

    async def run(self, proc: Process, commit: Awaitable[None], sig: int, grace: float | None,
                  undo: tuple[_StopFields, Child | None] | None = None) -> None:
        """Once ``terminating`` is committed: signal the tree, wait, escalate, finish.

        Also resumes a stop that an earlier daemon began (start-up, with no undo).
        """
        runner = self._runner
        try:
            await commit
        except RegistryError as exc:
            if undo is not None and not runner.closing:
                self._undo(proc, *undo, exc)
                return
            # shutting down: stop it anyway; its end is saved when storage allows
        child = self._children.get(proc.id)
        if child is None and proc.id in runner.spawning:   # the keeper is starting it: stop that
            child = await runner.spawning[proc.id]
        status = None
        if child is None:  # killed before it was spawned, or it exited meanwhile
            runner.admission.pop(proc.id, None)
            runner.emit(proc)
        else:
            trees = self._trees
            try:
                for attempt in range(LATE_ORPHAN_PASSES):
                    # The first pass takes the leader and its tree; later passes take
                    # orphans re-parented to us while it was being stopped.
                    members = trees.stop_sets[proc.id] = {}
                    await trees.signal_tree(child, sig, members)
                    if attempt == 0:  # signals first: the event and the log can wait
                        runner.emit(proc)
                        self._log.info("process.stopping", process_id=proc.id,
                                       signal=oskit.signal_name(sig), grace=grace)
                    status = await trees.stop_members(child, members, grace)
                    if not await trees.has_late_orphans(child):
                        break
            finally:
                trees.stop_sets.pop(proc.id, None)
        await runner.finish(proc, stopped_event(proc.stop_reason), status=status)

    def _undo(self, proc: Process, before: _StopFields, child: Child | None,
              error: BaseException) -> None:
        """``terminating`` could not be committed: nothing was signalled; back to running."""
        runner = self._runner
        reason = proc.stop_reason
        self._table.undo(proc, Event.KILL if reason is StopReason.KILL else Event.EXPIRE,
                         before.state)
        before.restore(proc)
        runner.unsaved.mark(proc)  # a rewrite racing this undo is written over
        self._log.warning("process.stop_unsaved", process_id=proc.id, error=message_of(error))
        if proc.id in runner.abandoned:
            return  # its pid could not be saved either: the abandon kills it and ends the record
        if child is None and proc.id in runner.spawning:
            return  # being spawned: the spawn goes on, and the record is running again
        if child is None:  # admitted, not spawned yet: the admission decides again
            admission = runner.admission.get(proc.id)
            if admission is None:
                runner.finish(proc, Event.LOST, error="its stop could not be recorded and it is gone")
            elif admission.done():
                runner.tasks.spawn(runner.after_admission(proc))
            return
        if child.exited.done():  # it exited while the stop was being recorded
            runner.exits.settle(proc, child, child.exited.result())
        elif reason is StopReason.TIMEOUT:
            child.timer = runner.loop.call_later(EXPIRE_RETRY, self.expire, proc.id)


def message_of(error: BaseException) -> str:
    """What to say of ``error``: an ApiError's message, else its text (or its type)."""
    return error.message if isinstance(error, ApiError) else (str(error) or type(error).__name__)


def wall() -> float:
    return time.time()


def done_future() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
