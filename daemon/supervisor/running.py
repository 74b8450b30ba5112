"""A record's way from created to idle: admission, spawn, finish (its exit is settled in exits.py).

**Persist intent, then act.** Each transition is applied to the in-memory record
(:meth:`ProcessTable.apply`) and its write queued to the registry in the same
synchronous step (so writes keep the order of events), and the commit is awaited
before the action it announces: a child is spawned only once ``running`` is
committed (a signal only once ``terminating`` is: terminating.py).

What a failed write costs here (the rest of issue 15 is in the package docstring):

* *The daemon's own intent* to run a queued record: if ``running`` cannot be
  committed the child is never spawned; the record ends idle/failed ("not
  started: storage is failing ...") and frees its slot.
* *A spawned child's pid*: if it cannot be committed, the child's tree is
  SIGKILLed and the record ends idle/failed (:meth:`Runner._abandon`). The
  create request then gets its 201 with that failed record, never a 503: a 503
  always means that nothing was spawned.
* Anything else that fails between a record's insert and its child running
  (output files, a spawn error of any kind) ends the record idle/failed with the
  error and frees its slot: :meth:`Runner.spawn` never raises for those.

The hot paths are create → spawn and exit → idle: neither awaits anything but
the commits it must, and an exit's idle write is queued in the same turn of the
loop as its reap.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from .. import oskit
from ..config import Config
from ..errors import Conflict
from ..keeper.client import KeeperError, KeeperGone, SpawnFailed
from ..model import ACTIVE, Event, Process, StartSpec, State, iso_to_epoch, now_iso, transition
from ..output import OutputStore
from ..registry import DuplicateKey, Registry, RegistryError, StorageError
from .children import Child, Children, Markers, run_of
from .exits import Exits
from .kept import KeeperLink
from .leases import lease_expiry
from .managing import Managing
from .reconcile import recover_keeper
from .stdio import Stdio
from .stopping import Trees
from .table import ProcessTable
from .tasks import Tasks
from .terminating import Terminating, message_of, wall
from .unsaved import UnsavedRecords

Listener = Callable[[Process], None]


class Runner:
    """Drives every transition the daemon makes on its own; owns the children."""

    def __init__(self, config: Config, registry: Registry, outputs: OutputStore, log: Any,
                 table: ProcessTable, unsaved: UnsavedRecords, tasks: Tasks, markers: Markers,
                 listeners: list[Listener]) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.config = config
        self.registry = registry
        self.outputs = outputs
        self.log = log
        self.table = table
        self.unsaved = unsaved
        self.tasks = tasks
        self.markers = markers
        self.listeners = listeners
        self.write = unsaved.write
        self.exits = exits = Exits(self)    # the children's ends (exits.py)
        self.children = Children(loop, log, exits.on_exit)
        self.keeper = keeper = KeeperLink(str(config.state_dir), config.grace,
                                          config.keeper == "external", log,
                                          exits.keeper_exit, self._keeper_lost)
        self.trees = Trees(loop, log, config, self.children, markers, keeper)
        self.stdio = Stdio(log, outputs, table, self.children, keeper)
        self.terminating = Terminating(self)
        self.closing = False
        self.admission: dict[int, asyncio.Future[None]] = {}  # id -> its `running` write
        self.spawning: dict[int, asyncio.Future[Child | None]] = {}  # id -> the spawn in flight
        self.abandoned: set[int] = set()            # spawned, pid not committed: being killed
        self.from_keeper: set[int] = set()          # exits to acknowledge once committed
        self.recovering = False                     # the keeper was lost: finding one again
        self.naming: set[str] = set()               # names of creates being inserted
        self.managing = Managing(self)

    # --- creation and admission ------------------------------------------------------

    async def create(self, spec: StartSpec, key: str | None, fingerprint: str | None,
                     replay: Callable[[Process], Process]) -> tuple[Process, bool]:
        """Insert a record and start (or queue) it. A reused Idempotency-Key found only by
        the insert is answered by ``replay`` with the existing record."""
        if spec.name is not None and (spec.name in self.naming or
                                      any(p.name == spec.name for p in self.table.records())):
            raise Conflict(f"a live process is already named {spec.name!r}")
        event = Event.ADMIT if self.table.has_slot() and not self.table.queue else Event.ENQUEUE
        state, _ = transition(None, event)
        proc = Process(id=0, state=state, argv=spec.argv, created_at=now_iso(), ref=spec.ref,
                       command=spec.command, env=spec.env, cwd=spec.cwd, timeout=spec.timeout,
                       grace=spec.grace, stdin=spec.stdin, stdout_mode=spec.stdout_mode,
                       stderr_mode=spec.stderr_mode, idempotency_key=key,
                       request_hash=fingerprint, name=spec.name, managed=spec.managed,
                       tty=spec.tty, tty_token=spec.tty_token)
        if spec.lease is not None:   # it runs from the creation, and is inserted with it
            proc.lease, proc.lease_expires_at = spec.lease, lease_expiry(spec.lease)
        self.managing.begin(proc)
        self.table.reserve(proc)
        if spec.name is not None:
            self.naming.add(spec.name)
        try:
            proc.id = await self.registry.insert(proc.columns() | {"id": None})
        except DuplicateKey:
            self._unreserve(proc)
            existing = await self.registry.by_idempotency_key(key or "")
            if existing is None:
                raise
            return replay(existing), False
        except BaseException as exc:
            self._unreserve(proc)
            if isinstance(exc, StorageError):
                self.log.warning("process.not_created", error=exc.message)
                raise StorageError(f"{exc.message}; the process was not created") from None
            raise  # WriteRejected (a 400) among others: this request alone fails
        finally:
            self.naming.discard(spec.name or "")
        self.table.insert(proc)
        self.log.info("process.created", process_id=proc.id, state=proc.state.value, argv=proc.argv)
        self.emit(proc)
        if state is State.RUNNING:
            await self.spawn(proc)  # never raises for a failure before the child runs
            return proc.copy(), True
        snapshot = proc.copy()
        self.table.queue.append(proc.id)
        self.admit()  # a slot may have been freed while the insert was committing
        return snapshot, True

    def _unreserve(self, proc: Process) -> None:
        """A record whose insert failed never existed: the slot it held goes to the queue."""
        self.table.unreserve(proc)
        if proc.state in ACTIVE:
            self.admit()

    def admit(self) -> None:
        """Start queued records, oldest first, while slots are free."""
        while not self.closing and (proc := self.table.next_admissible()) is not None:
            self.table.apply(proc, Event.ADMIT)
            commit = self.admission[proc.id] = self.write(proc, state=proc.state)
            self.tasks.spawn(self._admit_one(proc, commit))

    async def _admit_one(self, proc: Process, commit: asyncio.Future[None]) -> None:
        try:
            await commit
        except RegistryError:
            pass  # after_admission reads the outcome
        if self.admission.get(proc.id) is commit and proc.state is State.RUNNING:
            await self.after_admission(proc)
        # else a kill began meanwhile: it finishes the record, or undoes itself and
        # hands the record back to after_admission (Terminating.undo)

    async def after_admission(self, proc: Process) -> None:
        """Spawn an admitted record once ``running`` is committed; if that commit
        failed, never spawn it: it ends idle/failed and frees its slot."""
        commit = self.admission.pop(proc.id)
        error = commit.exception()
        if error is not None:
            await self.finish(proc, Event.SPAWN_FAILED, error=f"not started: {message_of(error)}")
            return
        self.emit(proc)
        await self.spawn(proc)

    # --- spawning --------------------------------------------------------------------

    async def spawn(self, proc: Process) -> None:
        """Start a record that is committed as running (unless it was killed meanwhile).

        The keeper spawns it (kept.py). Never raises for what fails before the child
        runs: the record ends idle/failed with the error and frees its slot. A pid
        that cannot be committed costs the child its life (:meth:`_abandon`). A kill
        that arrives while the keeper is spawning waits for the spawn
        (:attr:`spawning`) and stops what it started.
        """
        if proc.state is not State.RUNNING:
            return  # killed between admission and spawn: the kill path finishes it
        spawning: asyncio.Future[Child | None] = self.loop.create_future()
        self.spawning[proc.id] = spawning
        child = None
        try:
            child = await self._spawn(proc)
        finally:
            del self.spawning[proc.id]
            spawning.set_result(child)
        if child is None:
            return
        commit = self.write(proc, pid=proc.pid, boot_id=proc.boot_id, started_at=proc.started_at,
                            pid_start_time=proc.pid_start_time)
        if proc.state is State.RUNNING:
            self.arm_timeout(proc, child)
        self.log.info("process.spawned", process_id=proc.id, pid=proc.pid)
        try:
            await commit
        except RegistryError as exc:
            await self._abandon(proc, child, exc)

    async def _spawn(self, proc: Process) -> Child | None:
        """Ask the keeper for the child; on failure end the record (unless a kill will)."""
        run = run_of(proc, next_run=True)
        try:
            spawned = await self.keeper.spawn(
                proc.id, proc.argv, self.markers.env(proc, run), proc.cwd or os.getcwd(),
                stdin="pipe" if proc.stdin == "pipe" else "null", stdout=proc.stdout_mode,
                stderr=proc.stderr_mode, cap=self.config.max_output_bytes or None, tty=proc.tty)
        except Exception as exc:  # whatever it is, nothing runs: say why on the record
            if isinstance(exc, KeeperGone):
                # A spawn the keeper received may have started: the recovery stops it as a stray.
                exc = KeeperGone(f"not started: the keeper was lost ({exc})")
            elif not isinstance(exc, (KeeperError, OSError)):
                self.log.error("process.spawn_error", process_id=proc.id, error=repr(exc))
            if proc.state is State.RUNNING and proc.managed is not None and \
                    isinstance(exc, KeeperError) and not isinstance(exc, SpawnFailed) and \
                    self.managing.spawn_failed(proc, str(exc)):
                return None   # the keeper was lost, or still held the id: tried again later
            if proc.state is State.RUNNING:
                await self.finish(proc, Event.SPAWN_FAILED, error=str(exc) or type(exc).__name__)
            return None
        ticks = spawned.start_ticks if spawned.start_ticks is not None else -1
        child = self.children.new(proc.id, spawned.pid, ticks, -1, kept=True,
                                  stdin_open=proc.stdin == "pipe", run=run)
        proc.pid, proc.boot_id, proc.started_at = spawned.pid, self.markers.boot_id, now_iso()
        # The start time proves identity after a restart; the keeper reads it at spawn.
        # Without it (/proc unreadable) a restarted daemon goes by the child's marker.
        proc.pid_start_time = spawned.start_ticks
        self.children.watch(child)
        if proc.managed is not None and proc.state is State.RUNNING:
            self.managing.run_started(proc, child)
        return child

    async def _abandon(self, proc: Process, child: Child, error: BaseException) -> None:
        """The pid of a child just spawned could not be committed: kill its tree, fail the record.

        Its creator is told the start failed (and a daemon restarted meanwhile
        would know the child only by its marker). A child that already ended
        decides the record's end instead, and so does a kill under way, once
        committed (if its ``terminating`` fails too, the undo leaves it to us).
        """
        if proc.state is State.IDLE or child.exited.done():
            return
        self.abandoned.add(proc.id)
        if child.timer is not None:
            child.timer.cancel()
            child.timer = None
        self.log.warning("process.abandoned", process_id=proc.id, pid=child.pid,
                         error=message_of(error))
        try:
            members = await self.trees.signal_tree(child, signal.SIGKILL, {})
            status = await self.trees.stop_members(child, members, 0)
        finally:
            self.abandoned.discard(proc.id)
        if proc.state is State.RUNNING:
            await self.finish(proc, Event.SPAWN_FAILED, status=status, error=(
                f"stopped right after it started: its pid could not be recorded ({message_of(error)})"))

    def arm_timeout(self, proc: Process, child: Child) -> None:
        if proc.timeout is None:
            return
        started = iso_to_epoch(proc.started_at) or wall()
        delay = max(0.0, started + proc.timeout - wall())
        child.timer = self.loop.call_later(delay, self.terminating.expire, proc.id)

    def grace_of(self, proc: Process) -> float:
        return proc.grace if proc.grace is not None else self.config.grace

    # --- the keeper lost ------------------------------------------------------------

    def _keeper_lost(self, error: KeeperGone) -> None:
        if not self.closing and not self.recovering:
            self.recovering = True
            self.tasks.spawn(self._recover())

    async def _recover(self) -> None:
        try:
            await recover_keeper(self)
        finally:
            self.recovering = False

    # --- finishing -------------------------------------------------------------------

    def finish(self, proc: Process, event: Event, *, status: oskit.ExitStatus | None = None,
               error: str | None = None) -> asyncio.Task[None]:
        """Move a record to idle and free its slot now; the returned (owned) task
        completes once idle is committed and the record's waiters are woken.

        The write is queued before this returns, not when a task first runs, so
        an exit's commit starts in the same turn of the loop as its reap.
        """
        held_slot = proc.state in ACTIVE
        if proc.managed is not None:
            self.managing.stopping(proc)   # no next run, no probe left behind
        self.table.apply(proc, event)
        proc.completed_at = now_iso()
        if status is not None:
            proc.exit_code, proc.exit_signal = status.code, status.signal_name
        if error is not None:
            proc.error = _storable(error)
        commit = self.write(
            proc, state=proc.state, exit_state=proc.exit_state, completed_at=proc.completed_at,
            exit_code=proc.exit_code, exit_signal=proc.exit_signal, error=proc.error,
            stdout_dropped=proc.stdout_dropped, stderr_dropped=proc.stderr_dropped,
            **({"managed_state": proc.managed_state} if proc.managed_state is not None else {}))
        if held_slot:
            self.admit()  # the slot it held is free
        return self.tasks.spawn(self.finished(proc, commit))

    async def finished(self, proc: Process, commit: Awaitable[None]) -> None:
        from_keeper = proc.id in self.from_keeper
        self.from_keeper.discard(proc.id)
        try:
            await commit
            if from_keeper:
                self.keeper.ack_soon(proc.id)   # committed: the keeper may forget it
        except RegistryError:
            pass  # the end happened: it is kept unsaved in memory and saved later (unsaved.py);
            # the keeper keeps it too, and replays it to the next daemon
        finally:
            self.table.discard(proc.id)  # only now: waiters registered meanwhile are still woken
        self.log.info("process.exited", process_id=proc.id,
                      exit_state=proc.exit_state and proc.exit_state.value,
                      exit_code=proc.exit_code, exit_signal=proc.exit_signal, error=proc.error)
        self.table.settled(proc)
        self.emit(proc)

    def emit(self, proc: Process) -> None:
        """Tell the listeners (events, metrics) of a committed change."""
        snapshot = proc.copy()
        for listener in self.listeners:
            listener(snapshot)


def _storable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates, say from a file name) escaped,
    so SQLite can store it and JSON can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")

