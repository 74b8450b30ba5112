"""A child's end as the daemon learns of it, and what it means for its record.

Exits come from the keeper (an :class:`ExitEvent`, journalled there before it is
told, delivered at least once) or, for a leader the daemon watches itself (adopted
after a restart, or kept by a keeper since lost), from its pidfd
(:class:`Children`). Either way the record is settled here: success for status
0, failed with the reason's words otherwise, or, for a managed record, whatever
its restart policy decides; then what the leader left in its process group is
stopped. A record already terminating is finished by its stop task, not here.
Split from running.py, which starts records and finishes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import oskit
from ..keeper.client import ExitEvent
from ..model import ACTIVE, Event, Process, State
from .children import Child

if TYPE_CHECKING:
    from .running import Runner


class Exits:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def keeper_exit(self, event: ExitEvent) -> None:
        """The keeper reaped a child and journalled its exit: settle the record.

        Idempotent by id (the keeper delivers at least once). The output marks come
        with it. An exit of a record that is no longer live was committed before:
        it is only acknowledged.
        """
        runner = self._runner
        status = oskit.ExitStatus(code=event.code, signal=event.signal)
        proc = runner.table.get(event.id)
        if proc is None:
            if runner.unsaved.get(event.id) is None:   # committed: the keeper may forget it
                runner.keeper.ack_soon(event.id)
            return
        if proc.state not in ACTIVE:
            return   # its end is being committed; acknowledged then (finished)
        proc.stdout_dropped = max(proc.stdout_dropped, event.stdout_dropped)
        proc.stderr_dropped = max(proc.stderr_dropped, event.stderr_dropped)
        if event.stdout_lost or event.stderr_lost:
            runner.log.warning("process.output_lost", process_id=event.id,
                               stdout_lost=event.stdout_lost, stderr_lost=event.stderr_lost)
        runner.from_keeper.add(event.id)
        if runner.children.keeper_exit(event.id, status):
            return
        if event.id in runner.spawning:
            runner.children.hold_exit(event.id, status)   # its spawn reply is being handled
        elif proc.managed is not None and proc.pid == event.pid:
            # A managed run's exit replayed (a new keeper's listing) after the daemon settled
            # it: its next run waits on this ack (the keeper holds the id until then).
            runner.from_keeper.discard(event.id)
            runner.keeper.ack_soon(event.id)

    def on_exit(self, child: Child, status: oskit.ExitStatus | None) -> None:
        """A leader the daemon watches itself (adopted, or its keeper lost) exited."""
        proc = self._runner.table.get(child.id)
        if proc is None or proc.state is not State.RUNNING or proc.id in self._runner.abandoned:
            return  # terminating (or abandoned): the stop task finishes the record
        self.settle(proc, child, status)

    def settle(self, proc: Process, child: Child, status: oskit.ExitStatus | None) -> None:
        """Finish a running record whose leader exited, and sweep what it left in its group."""
        if status is not None and status.code == 0:
            event, error = Event.EXITED_OK, None
        elif status is None and child.keeper_lost:
            event, error = Event.EXITED_ERROR, ("exit status unknown: its keeper was killed, and "
                                                "its output since then was not captured")
        elif status is None:
            event, error = Event.EXITED_ERROR, ("exit status unknown: no keeper held the process "
                                                "(it was re-adopted after a restart)")
        elif status.signal:
            event, error = Event.EXITED_ERROR, f"killed by {status.signal_name}"
        else:
            event, error = Event.EXITED_ERROR, f"exited with status {status.code}"
        if proc.managed is not None:
            outcome = self._runner.managing.run_ended(proc, child, status, event, error)
            if outcome is True:   # the record goes on: its next run is scheduled
                self._sweep(child)
                return
            if isinstance(outcome, str):
                event, error = Event.EXITED_ERROR, outcome
        self._runner.finish(proc, event, status=status, error=error)
        self._sweep(child)

    def _sweep(self, child: Child) -> None:
        """Stop what an exited leader left in its process group."""
        if oskit.group_has_members(child.pid):
            self._runner.tasks.spawn(self._runner.trees.sweep(child))
