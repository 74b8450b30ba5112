"""The process table: the one owner of every record that may still change.

A record lives here from its creation until its idle state has settled
(committed, or kept unsaved in memory): the live records by id, the FIFO queue of
those waiting for a slot, the waiters of ``GET /processes/{id}/wait``, and, once
idle, the recently settled records (:class:`~daemon.recent.RecentRecords`) that
reads are served from without going to SQLite.

**The state table is the gate.** A record's state changes in one place,
:meth:`ProcessTable.apply`, which asks :func:`~daemon.model.transition` for the
new state: a pair missing from the table raises InvalidTransition (a 409). The
only other way a state changes is :meth:`ProcessTable.undo`: a transition whose
write failed is taken back (issue 15), and only a transition the table has can
be undone.

**Slots are derived from states.** ``max_concurrent`` counts records that hold a
process (``ACTIVE``: running or terminating). The count is kept by the methods
that change what the table holds: a state change, a record entering (loaded at
start-up, or reserved by a create before its insert commits) or a reservation
dropped because its insert failed. Nothing else touches it, so it cannot drift
from the states it counts.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
from collections.abc import Iterable, Iterator

from ..model import ACTIVE, Event, ExitState, InvalidTransition, Process, State, transition
from ..recent import RecentRecords


class ProcessTable:
    def __init__(self, max_concurrent: int) -> None:
        self._live: dict[int, Process] = {}      # queued / running / terminating (and idle until settled)
        self.queue: collections.deque[int] = collections.deque()   # ids waiting for a slot, oldest first
        self.recent = RecentRecords()            # settled records, read without SQLite
        self._waiters: dict[int, list[asyncio.Future[Process | None]]] = {}
        self._max = max_concurrent
        self._held = 0                           # slots held: records here (or reserved) in ACTIVE

    # --- reads -----------------------------------------------------------------------

    def get(self, process_id: int) -> Process | None:
        """The live record (the supervisor's own object: do not change it)."""
        return self._live.get(process_id)

    def __contains__(self, process_id: object) -> bool:
        return process_id in self._live

    def records(self) -> list[Process]:
        return list(self._live.values())

    def counts(self) -> dict[str, int]:
        counts = collections.Counter(p.state.value for p in list(self._live.values()))
        return {"queued": counts["queued"], "running": counts["running"],
                "terminating": counts["terminating"]}

    def has_slot(self) -> bool:
        return self._max == 0 or self._held < self._max

    def next_admissible(self) -> Process | None:
        """The oldest queued record, taken off the queue, if a slot is free for it."""
        if self.queue and self.has_slot():
            return self._live[self.queue.popleft()]
        return None

    # --- records entering and leaving ------------------------------------------------

    def reserve(self, proc: Process) -> None:
        """A record being created, before its insert commits: its slot is held already,
        so that creates racing it cannot take it. It has no id yet and is not live."""
        self._held += proc.state in ACTIVE

    def unreserve(self, proc: Process) -> None:
        """The insert of a reserved record failed: it never existed."""
        self._held -= proc.state in ACTIVE

    def insert(self, proc: Process) -> None:
        """A reserved record whose insert committed: now live (a queued one is not queued yet)."""
        self._live[proc.id] = proc

    def load(self, proc: Process) -> None:
        """A record found live in SQLite at start-up; a queued one joins the queue."""
        self._live[proc.id] = proc
        self._held += proc.state in ACTIVE
        if proc.state is State.QUEUED:
            self.queue.append(proc.id)

    def requeue(self, proc: Process) -> None:
        """A queued record whose cancel was undone goes back to its place (ids are FIFO order)."""
        bisect.insort(self.queue, proc.id)

    def unqueue(self, ids: set[int]) -> None:
        """Take these ids off the queue in one pass (a bulk stop: ``deque.remove`` per id
        would be quadratic in the queue's length)."""
        if ids:
            kept = [i for i in self.queue if i not in ids]
            self.queue.clear()
            self.queue.extend(kept)

    def discard(self, process_id: int) -> None:
        """The record's idle state settled: it leaves the live table."""
        del self._live[process_id]

    def settled(self, proc: Process) -> Process:
        """Keep the final copy of a record that left the table and wake its waiters with it."""
        final = proc.copy()  # committed or unsaved: waiters and readers need not read it back
        self.recent.add(final)
        for waiter in self._waiters.pop(proc.id, []):
            if not waiter.done():
                waiter.set_result(final)
        return final

    # --- state changes ---------------------------------------------------------------

    def apply(self, proc: Process, event: Event) -> None:
        """Move ``proc`` by ``event`` as the transition table says (InvalidTransition if it
        has no such pair); the exit state is set when the record becomes idle."""
        state, exit_state = transition(proc.state, event)
        self._held += (state in ACTIVE) - (proc.state in ACTIVE)
        proc.state = state
        if exit_state is not None:
            proc.exit_state = exit_state

    def undo(self, proc: Process, event: Event, before: State,
             exit_before: ExitState | None = None) -> None:
        """Take back ``event``, applied in memory but refused by SQLite: the record returns
        to the state SQLite still holds. Only a transition the table has can be undone."""
        if (before, event) not in _UNDOABLE or transition(before, event)[0] is not proc.state:
            raise InvalidTransition(proc.state, event, f"cannot undo {event.value} of a process "
                                                       f"that is {proc.state.value}")
        self._held += (before in ACTIVE) - (proc.state in ACTIVE)
        proc.state, proc.exit_state = before, exit_before

    # --- waiters ---------------------------------------------------------------------

    def add_waiter(self, process_id: int, waiter: asyncio.Future[Process | None]) -> None:
        """``waiter`` gets the final record once the live record ``process_id`` settles."""
        self._waiters.setdefault(process_id, []).append(waiter)

    def remove_waiter(self, process_id: int, waiter: asyncio.Future[Process | None]) -> None:
        waiters = self._waiters.get(process_id, [])
        if waiter in waiters:
            waiters.remove(waiter)

    @contextlib.contextmanager
    def settling(self, ids: Iterable[int]) -> Iterator[dict[int, asyncio.Future[Process | None]]]:
        """A waiter for each of ``ids`` that is live now (by id), each given the final
        record once that record settles; all removed when the block ends, however it ends."""
        loop = asyncio.get_running_loop()
        waiters: dict[int, asyncio.Future[Process | None]] = {}
        for process_id in ids:
            if process_id in self and process_id not in waiters:
                waiter = waiters[process_id] = loop.create_future()
                self.add_waiter(process_id, waiter)
        try:
            yield waiters
        finally:
            for process_id, waiter in waiters.items():
                self.remove_waiter(process_id, waiter)


# The transitions a client's request makes and whose write may be refused: a kill of a
# queued record (to idle/canceled) and a kill or timeout of a running one (to terminating).
_UNDOABLE = frozenset({(State.QUEUED, Event.KILL), (State.RUNNING, Event.KILL),
                       (State.RUNNING, Event.EXPIRE)})
