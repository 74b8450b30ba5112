"""The supervisor's public surface: the one object the HTTP layer, the service and tests use.

Each method checks what the request asks against the record as the process
table has it and hands the work to the module whose job it is (see the package
docstring for the map). Nothing outside this package needs the registry, oskit
or a supervisor constant to use it.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import signal
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from .. import oskit
from ..config import Config
from ..errors import ApiError, Conflict, Forbidden, NotFound, Unavailable
from ..events import EventHub
from ..keeper.client import KeeperError
from ..metrics import Metrics
from ..model import ACTIVE, SETTLED, STOPPABLE, ExitState, Process, StartSpec, State, StopReason
from ..output import OutputStore
from ..quiet import TrimWhenQuiet
from ..registry import Registry
from .bulk import BulkStops
from .calls import ProcessCalls
from .children import Markers, resolve, with_plain_env
from .leases import Leases
from .polling import Polls
from .reconcile import reconcile
from .running import Listener, Runner
from .stopping import KILL_WAIT
from .table import ProcessTable
from .tasks import Tasks
from .terminating import done_future
from .unsaved import UnsavedRecords


class Supervisor(ProcessCalls):
    """Owns every child from creation to its last exit. Made inside the loop it serves.

    The calls that act on a live process's signals, pids, stdin, output, terminal,
    polls and leases are in :class:`~.calls.ProcessCalls` (calls.py), which this
    class is: one object, two files."""

    def __init__(self, config: Config, registry: Registry, outputs: OutputStore) -> None:
        self.config = config
        self.registry = registry
        self.outputs = outputs
        self.log = structlog.get_logger("stablehand.supervisor")
        self.events = EventHub()
        self.metrics = Metrics()
        self.quiet = TrimWhenQuiet()        # the C heap trimmed once the daemon goes quiet
        self.closing = asyncio.Event()      # set when shutdown begins: open streams end then
        self._listeners: list[Listener] = [self.events.publish, self.metrics.observe,
                                           self.quiet.observe]
        self._table = ProcessTable(config.max_concurrent)
        self._unsaved = UnsavedRecords(registry, self.log)   # memory ahead of SQLite
        self._tasks = Tasks(self.log)
        self._markers = Markers()
        self._runner = runner = Runner(config, registry, outputs, self.log, self._table,
                                      self._unsaved, self._tasks, self._markers, self._listeners)
        self._children, self._trees, self._stdio = runner.children, runner.trees, runner.stdio
        self._loop = runner.loop
        self._leases = Leases(runner)                 # issue 20: leases.py, polling.py
        self._listeners.append(self._leases.observe)
        self._polls = Polls(outputs)
        self._bulk = BulkStops(runner, self._unsaved, registry)   # issue 21: bulk.py

    @property
    def _instance(self) -> str:
        """This registry's instance id, carried by every child (tests look for it)."""
        return self._markers.instance

    @property
    def keeper_pid(self) -> int:
        """The keeper's pid (0 while it is being found again): the parent of every child."""
        return self._runner.keeper.pid

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Take ownership: find (or start) the keeper, reconcile the registry, start the queue."""
        reset = oskit.reset_inherited_signals()   # a keeper we start inherits our dispositions
        if reset:
            self.log.info("daemon.signals_reset", signals=reset)
        instance = await self.registry.get_meta("instance") or ""
        if not instance:
            instance = uuid.uuid4().hex
            await self.registry.set_meta("instance", instance)
        self._markers.instance = instance
        try:
            listing = await self._runner.keeper.connect()
        except KeeperError as exc:
            raise Unavailable(f"cannot reach or start the keeper: {exc}") from None
        await reconcile(self._runner, listing)
        self._leases.resume()
        self._runner.admit()

    async def shutdown(self) -> None:
        """Stop (or detach from) every child, per the ``shutdown`` setting."""
        runner, tasks = self._runner, self._tasks
        runner.closing = True
        self.closing.set()
        self._leases.close()
        self.outputs.close()
        if self.config.shutdown == "stop":
            graces = [0.0]
            for proc in self._table.records():
                if proc.state is State.RUNNING:
                    graces.append(runner.grace_of(proc))
                    runner.terminating.begin(proc, StopReason.KILL, graces[-1], signal.SIGTERM)
            # Stops that never escalate on their own (psys's SIGTERM-only route) are
            # finished with SIGKILL once every grace period has passed.
            waits: builtins.list[asyncio.Future[Any]] = [*tasks.pending()] or [done_future()]
            _, pending = await asyncio.wait(waits, timeout=max(graces) + 1)
            if pending:
                for process_id in list(self._trees.stop_sets):
                    await self._trees.kill_stopping(process_id)
            await tasks.drain()
            await runner.managing.close()
            await runner.keeper.stop_keeper()
        else:
            left = [{"id": p.id, "pid": p.pid} for p in self._table.records() if p.state in ACTIVE]
            self.log.info("daemon.detached", processes=left, count=len(left))
            await runner.managing.close()
            await tasks.cancel_all()
            await runner.keeper.close()
        for child in self._children.all():
            self._children.forget(child)
        await self._unsaved.close()
        self.quiet.close()   # no heap-trim timer left on a loop that is ending

    def served(self, method: str, route: str, status: int) -> None:
        """An HTTP request was answered: counted for /metrics, and the daemon is not quiet."""
        self.metrics.count_request(method, route, status)
        self.quiet.touch()

    # --- queries ---------------------------------------------------------------------

    async def get(self, process_id: int) -> Process:
        """The committed record (shared when idle: do not change it), or the
        in-memory one while its latest state is unsaved."""
        record = self._unsaved.get(process_id)
        if record is not None:
            return record
        recent = self._table.recent
        record = recent.get(process_id)
        if record is not None:
            return record
        generation = recent.generation
        record = await self.registry.get(process_id)
        if record is None:
            raise NotFound(f"process {process_id} not found")
        recent.offer(record, generation)
        return record

    async def resolve(self, name: str) -> int:
        """The id of the newest record named ``name`` (live first: a live holder is newest)."""
        live = [p.id for p in self._table.records() if p.name == name]
        if live:
            return max(live)
        record = await self.registry.newest_by_name(name)
        if record is None:
            raise NotFound(f"no process is named {name!r}")
        return record.id

    async def runs(self, process_id: int) -> builtins.list[dict[str, Any]]:
        """A managed process's runs, oldest first ([] for one that is not managed)."""
        await self.get(process_id)
        await self._runner.managing.rows_written(process_id)
        return await self.registry.runs(process_id)

    async def restart(self, process_id: int) -> Process:
        """Stop a managed process's current run and start the next at once (the backoff reset).

        Returns the record once the next run has started (or the stop's time ran out).
        Conflict if it is not managed or not running.
        """
        proc = self._table.get(process_id)
        if proc is None:
            record = await self.get(process_id)
            raise Conflict(f"process {process_id} is {record.state.value}"
                           if record.managed else f"process {process_id} is not a managed process")
        grace = self._runner.grace_of(proc)
        await self._tasks.owned(self._runner.managing.restart(
            proc, self._children.get(process_id), grace + KILL_WAIT + 1))
        return proc.copy()

    async def list(self, *, state: State | None = None, exit_state: ExitState | None = None,
                   ref: str | None = None, name: str | None = None, before_id: int | None = None,
                   limit: int = 100) -> builtins.list[Process]:
        """Records, newest first (``before_id``: only ids below it), unsaved ones as memory has them.

        The filters apply to SQLite's committed rows: while storage fails, a record
        whose exit is unsaved is returned by ``state=running`` (showing it idle) and
        missing from ``state=idle``.
        """
        return self._unsaved.overlay(await self.registry.list(
            state=state, exit_state=exit_state, ref=ref, name=name, before_id=before_id, limit=limit))

    async def count(self) -> int:
        """How many records the registry holds (for /metrics)."""
        return await self.registry.count()

    @property
    def queue_length(self) -> int:
        return len(self._table.queue)

    def counts(self) -> dict[str, int]:
        """Live records by state: queued, running, terminating."""
        return self._table.counts()

    def is_active(self, process_id: int) -> bool:
        """Whether the process may still change (queued, running or terminating)."""
        return process_id in self._table

    # --- create, stop, wait, delete --------------------------------------------------

    async def create(self, spec: StartSpec, idempotency_key: str | None = None) -> tuple[Process, bool]:
        """Create a record and start (or queue) it. Returns (record, created)."""
        if self._runner.closing:
            raise Unavailable("the daemon is shutting down")
        allowed = self.config.allowed_programs
        if allowed and spec.argv[0] not in allowed:
            raise Forbidden(f"program {spec.argv[0]!r} is not in allowed_programs")
        fingerprint = spec.fingerprint() if idempotency_key else None
        if idempotency_key:
            existing = await self.registry.by_idempotency_key(idempotency_key)
            if existing is not None:
                return _check_replay(existing, fingerprint), False
        if spec.plain_env:   # children.py: after the fingerprint, which is of the request
            spec = dataclasses.replace(spec, env=with_plain_env(
                spec.env, tty=getattr(spec, "tty", None) is not None))
        record, created = await self._tasks.owned(self._runner.create(
            spec, idempotency_key, fingerprint, lambda found: _check_replay(found, fingerprint)))
        if created:
            self._leases.arm(record.id)
        return record, created

    async def stop(self, process_id: int, *, grace: float | None = None,
                   sig: int = signal.SIGTERM, escalate: bool = True) -> Process:
        """Kill/stop: queued → idle/canceled; running → terminating (then idle/canceled).

        ``escalate=False`` sends ``sig`` only and never SIGKILL (psys's route);
        :meth:`force_kill` can still finish such a stop. NotFound for an unknown
        id; Conflict when it is already idle or terminating.
        """
        proc = self._table.get(process_id)
        if proc is None:
            await self.get(process_id)                # NotFound, or it exists but is idle
            proc = self._table.get(process_id)
            if proc is None:
                raise Conflict(f"process {process_id} is already idle")
        return await self._runner.terminating.stop(proc, grace, sig, escalate)

    async def stop_many(self, *, ids: Sequence[int] | None = None, ref: str | None = None,
                        state: State | None = None, grace: float | None = None
                        ) -> tuple[builtins.list[Process], bool]:
        """Stop every record that one selector names (``ids``; live ones carrying ``ref``;
        live ones in ``state``) at once and wait for them all: the records once all are
        idle (True), or as they are when the stops' time ran out (False). NotFound for an
        unknown id, before anything is stopped. See bulk.py."""
        return await self._bulk.stop(ids=ids, ref=ref, state=state, grace=grace)

    async def terminate(self, process_id: int, grace: float) -> tuple[Process, bool]:
        """Stop (SIGTERM, SIGKILL after ``grace``) and wait for the whole tree to go.

        Returns the record and whether it became idle in time. Raises as :meth:`stop`.
        """
        await self.stop(process_id, grace=grace)
        return await self.wait(process_id, grace + KILL_WAIT + 1)

    async def force_kill(self, process_id: int) -> Process:
        """SIGKILL the whole tree now, whatever stop is under way; returns the idle record."""
        proc = self._table.get(process_id)
        if proc is not None and proc.state in STOPPABLE:
            await self.stop(process_id, grace=0, sig=signal.SIGKILL)
        elif proc is not None and proc.state is State.TERMINATING:
            await self._trees.kill_stopping(process_id)
        record, _ = await self.wait(process_id, KILL_WAIT + 1)
        return record

    async def abandon(self, process_id: int) -> None:
        """The client that started a run went away: stop the run unless it has its own
        timeout (then it ends by itself); never leave a run without a deadline unattended."""
        proc = self._table.get(process_id)
        if proc is None or proc.timeout is not None:
            return
        try:
            await self.stop(process_id)
        except ApiError:
            pass  # it ended (or is ending) meanwhile, or its stop could not be recorded

    async def wait(self, process_id: int, timeout: float | None) -> tuple[Process, bool]:
        """The record once idle (True), or as it is when ``timeout`` passes (False).

        Liveness is checked before anything is awaited: a record leaves the table
        only after its idle write settled (committed, or kept unsaved in memory,
        which :meth:`get` serves), so a record that is not live reads back idle
        (or not at all: NotFound).
        """
        if process_id not in self._table:
            record = await self.get(process_id)
            return record, record.state in SETTLED
        # A bare future and timer rather than wait_for(shield(...)): the waiter is this
        # caller's alone, and each wrapper would add a turn of the loop to every wake-up.
        waiter: asyncio.Future[Process | None] = self._loop.create_future()
        self._table.add_waiter(process_id, waiter)
        timer = None if timeout is None else self._loop.call_later(timeout, resolve, waiter)
        try:
            final = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._table.remove_waiter(process_id, waiter)
        if final is None:  # timed out
            return await self.get(process_id), False
        return final, True

    async def delete(self, process_id: int) -> None:
        """Forget an idle record and its output. Conflict unless idle."""
        await self.get(process_id)
        proc = self._table.get(process_id)
        if proc is not None:
            raise Conflict(f"process {process_id} is {proc.state.value}, not idle")
        recent = self._table.recent
        recent.forget(process_id)
        try:
            await self.registry.delete(process_id)
        finally:
            recent.forget(process_id)  # and what a read racing the deletion kept
        self._unsaved.forget(process_id)
        self._polls.forget(process_id)
        self.outputs.remove(process_id)
        self.log.info("process.deleted", process_id=process_id)


def _check_replay(existing: Process, fingerprint: str | None) -> Process:
    if existing.request_hash != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return existing

