"""Stopping many records with one request (issue 21): ``POST /processes/stop``, and
``stablehand stop --all | --ref R | --state S`` on top of it.

A bulk stop is the single stop of terminating.py done for many records at once, in
three steps, each linear in the number of records it stops:

1. **Select.** ``ids``: the live ones from the process table, the others from memory
   (unsaved, recently settled) and then one registry query for whatever is left; an
   unknown id is NotFound naming the first one (in the request's order) *before
   anything is stopped*. ``ref`` and ``state`` select live records only, from the
   process table: ``ref`` every queued, running or terminating record carrying it,
   ``state`` those in that state. Nothing is read from SQLite for them.
2. **Stop, in one synchronous pass.** The queued records leave the queue together
   (one pass over it) and are canceled; the running ones begin ``terminating`` (the
   writes of one turn of the loop reach the registry's writer together, which
   commits them as a group); terminating ones, and records whose start could not be
   recorded (being killed already), are only waited for. No other callback runs
   between the first stop and the last, so admission cannot start a queued record
   the pass was about to cancel, and no record changes state under it.
3. **Wait for them all together**: one waiter per record on the process table and one
   deadline for all, the longest grace among them + KILL_WAIT + 1 (how long a stop
   goes on before stopping.py calls a tree unkillable). Each stop SIGKILLs its own
   stragglers once its grace is over, as every stop does; a stop begun earlier by
   psys's route never escalates by itself, and one begun earlier with a longer grace
   than this request gives would escalate too late, so once the longest grace has
   passed this SIGKILLs those that are left (``grace: 0`` on a record still in the
   grace of an earlier kill: SIGKILL now, as ``docker stop -t 0`` does).

Decisions where the issue is silent:

* A record named by ``ids`` that is already idle is in the answer as it is, so a
  retried bulk stop answers the same list. Ids given twice count once; the answer
  keeps the request's order (``ref`` and ``state``: oldest first).
* Nothing matching is not an error: the answer is an empty list.
* A stop whose ``terminating`` (or a queued record's ``canceled``) cannot be committed
  is undone as a single kill's is (issue 15: that process keeps running, or stays
  queued); once every commit of the pass has settled, the request fails with that
  StorageError (503), naming the process. The other stops go on.
* The deadline passing with a record still not idle (an unkillable tree) is not an
  error: the caller gets the records as they are and ``done`` False (HTTP 408).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..model import Process, State, StopReason
from ..registry import Registry, StorageError
from .stopping import KILL_WAIT

if TYPE_CHECKING:
    from .running import Runner
    from .unsaved import UnsavedRecords

MAX_IDS = 10000       # ids in one bulk stop


class BulkStops:
    def __init__(self, runner: Runner, unsaved: UnsavedRecords, registry: Registry) -> None:
        self._runner = runner
        self._table = runner.table
        self._unsaved = unsaved
        self._registry = registry

    async def stop(self, *, ids: Sequence[int] | None, ref: str | None, state: State | None,
                   grace: float | None) -> tuple[list[Process], bool]:
        """Stop every record the one selector given names; the records once all are idle
        (True), or as they are when the deadline passed (False). See the module docstring."""
        if sum(selector is not None for selector in (ids, ref, state)) != 1:
            raise ValueError("give exactly one of ids, ref or state")
        if ids is not None:
            order, known = await self._by_ids(ids)
        else:
            live = [p for p in self._table.records()
                    if (p.ref == ref if ref is not None else p.state is state)]
            order, known = sorted(p.id for p in live), {p.id: p for p in live}
        longest, commits, hurry = self._start(known, grace)
        if commits:
            await asyncio.wait([commit for _, commit in commits])
            self._raise_first_failure(commits)
        return await self._settle(order, known, longest, hurry)

    async def _by_ids(self, ids: Sequence[int]) -> tuple[list[int], dict[int, Process]]:
        """The ids in the request's order (once each) and the record of each (NotFound names
        the first unknown one); the live ones are the table's own objects."""
        order = list(dict.fromkeys(ids))
        known: dict[int, Process] = {}
        missing = []
        for process_id in order:
            record = (self._table.get(process_id) or self._unsaved.get(process_id)
                      or self._table.recent.get(process_id))
            if record is None:
                missing.append(process_id)
            else:
                known[process_id] = record
        if missing:
            for record in await self._registry.get_many(missing):
                # live meanwhile: a record whose insert committed before the table took it
                known[record.id] = self._table.get(record.id) or record
            for process_id in missing:
                if process_id not in known:
                    raise NotFound(f"process {process_id} not found")
        return order, known

    def _start(self, known: dict[int, Process], grace: float | None
               ) -> tuple[float, list[tuple[int, asyncio.Future[Any]]], set[int]]:
        """Step 2, synchronous: begin every stop. Returns the longest grace among the
        records, the futures of the stops' commits (each raises if its commit failed), and
        the stops under way that this request's grace cuts short."""
        runner, table = self._runner, self._table
        live = [p for p in known.values() if table.get(p.id) is p]
        table.unqueue({p.id for p in live if p.state is State.QUEUED})
        longest = 0.0
        commits: list[tuple[int, asyncio.Future[Any]]] = []
        hurry: set[int] = set()
        for proc in live:
            if proc.state is State.QUEUED:
                commits.append((proc.id, runner.terminating.cancel(proc)))
            elif proc.state is State.RUNNING and proc.id not in runner.abandoned:
                own = runner.grace_of(proc) if grace is None else grace
                longest = max(longest, own)
                commits.append((proc.id, runner.terminating.begin(proc, StopReason.KILL, own,
                                                                   signal.SIGTERM)))
            elif proc.state is State.TERMINATING:
                # A stop under way keeps its grace, unless this request gives a shorter one
                # (or its stop never escalates: psys's route): then this one's SIGKILL
                # comes when this request's grace is over (_settle).
                under_way = proc.stop_grace
                if under_way is None or (grace is not None and grace < under_way):
                    under_way = runner.grace_of(proc) if grace is None else grace
                    hurry.add(proc.id)
                longest = max(longest, under_way)
        return longest, commits, hurry

    @staticmethod
    def _raise_first_failure(commits: list[tuple[int, asyncio.Future[Any]]]) -> None:
        """A stop whose write failed was undone (terminating.py): fail the request with the
        first such error, naming its process (a cancel's error names it already)."""
        failed = [(i, error) for i, c in commits if (error := c.exception()) is not None]
        if not failed:
            return
        process_id, error = failed[0]
        if not isinstance(error, StorageError):
            raise error
        message = error.message if "still queued" in error.message else \
            f"{error.message}; process {process_id} was not stopped"
        more = f" ({len(failed) - 1} more stops were not recorded either)" if len(failed) > 1 else ""
        raise StorageError(message + more) from None

    async def _settle(self, order: list[int], known: dict[int, Process],
                      longest: float, hurry: set[int]) -> tuple[list[Process], bool]:
        """Step 3: wait for every record to be idle, all with one deadline. The answer is
        made of what memory holds (no read of SQLite per record)."""
        table = self._table
        with table.settling(order) as waiters:
            pending: set[asyncio.Future[Process | None]] = set(waiters.values())
            if pending:
                _, pending = await asyncio.wait(pending, timeout=longest)
            if pending:
                await self._kill_unescalated([i for i, w in waiters.items() if not w.done()], hurry)
                _, pending = await asyncio.wait(pending, timeout=KILL_WAIT + 1)
        records = []
        for process_id in order:
            settled = waiters.get(process_id)
            final = settled.result() if settled is not None and settled.done() else None
            if final is not None:
                records.append(final)
                continue
            live = table.get(process_id)
            records.append(live.copy() if live is not None else
                           self._unsaved.get(process_id) or table.recent.get(process_id)
                           or known[process_id])
        return records, not pending

    async def _kill_unescalated(self, ids: list[int], hurry: set[int]) -> None:
        """SIGKILL the trees of stops that would not escalate by now by themselves: psys's
        route never does, and a stop whose grace is longer than this request's (``hurry``)."""
        trees = self._runner.trees
        kills = []
        for process_id in ids:
            proc = self._table.get(process_id)
            if proc is not None and proc.state is State.TERMINATING and \
                    (proc.stop_grace is None or process_id in hurry):
                kills.append(trees.kill_stopping(process_id))
        if kills:
            await asyncio.gather(*kills, return_exceptions=True)
