"""The supervisor: owns every child from creation to its last exit.

How it keeps its promises:

* **Persist intent, then act.** Each transition is applied to the in-memory
  record and queued to the registry in the same synchronous step (so writes
  keep the order of events), and the commit is awaited before the action it
  announces: a child is spawned only once ``running`` is committed, a signal is
  sent only once ``terminating`` is committed.
* **One reaper.** The daemon is a child subreaper. ``_reap`` (whenever a
  child's pidfd turns readable, and once a second) collects every exited child
  with ``waitpid(-1, WNOHANG)`` and dispatches by pid; orphaned grandchildren
  are reaped there too. No SIGCHLD handler: exits are seen through pidfds, and
  uvloop keeps SIGCHLD for itself; an orphan's zombie lasts at most a second
  (its exit is seen at once through the pidfd a stop holds on it). Re-adopted
  processes (left by an earlier daemon) are not our children: their pidfd alone
  says they ended, and their exit status is unknown.
* **Never signal a stranger.** Our own unreaped children are signalled through
  the pidfd taken at spawn (and their process group, safe while the leader is
  unreaped); every other process of the tree is signalled through a pidfd
  opened first and then checked against its start ticks.
* **No strays.** Stopping takes the whole tree: the group, the session,
  descendants by parent links and orphans re-parented to us that carry the
  process's ``STABLEHAND_ID``. When a leader exits on its own, whatever it left
  in its process group is stopped too (as systemd does for a service's cgroup).
* **Client disconnects don't cut work short.** State-changing work runs in
  supervisor-owned tasks; HTTP handlers await them through ``asyncio.shield``.
* **Memory and SQLite never disagree for long, and never about a promise**
  (issue 15). Every transition's write goes through :meth:`_write`; what a
  failed write costs depends on what it records:

  - *A request's intent* is undone and the request gets 503 (StorageError,
    "storage is failing ..."): a create whose insert fails leaves nothing in
    memory and frees its slot; a kill whose ``terminating`` (or a queued
    record's ``canceled``) cannot be committed is undone in memory, no signal
    is sent, and the process keeps running (or goes back to its place in the
    queue). A timeout whose ``terminating`` cannot be committed is tried again
    EXPIRE_RETRY later. A value SQLite refuses to bind (a lone surrogate, a
    65-bit int) fails its own insert as a 400 and nobody else's.
  - *The daemon's own intent* to run a queued record: if ``running`` cannot be
    committed the child is never spawned; the record ends idle/failed ("not
    started: storage is failing ...") and frees its slot.
  - *A spawned child's pid*: if it cannot be committed, the child's tree is
    SIGKILLed and the record ends idle/failed (:meth:`_abandon`). The create
    request then gets its 201 with that failed record, never a 503: a 503
    always means that nothing was spawned.
  - *Facts* (an exit, a spawn failure, a finished stop, start ticks, output
    truncation) happened whatever the disk says: memory keeps them, the record
    is *unsaved* (daemon/unsaved.py) and written again with backoff until it
    commits (``registry.retry``, ``registry.recovered``). ``get``, ``wait``
    and the by-pid lookups serve it from memory; :meth:`list_processes` reads SQLite and
    overlays unsaved records onto the rows it returns, so a state filter still
    applies to the committed state.
  - Anything else that fails between a record's insert and its child running
    (output files, a spawn error of any kind) ends the record idle/failed with
    the error and frees its slot: :meth:`_spawn` never raises for those.

  A daemon that dies with records unsaved restarts from SQLite, where each is
  in its last committed state: a queued record whose failure to start was not
  saved runs then (its creator was told "queued"), a running one whose exit was
  not saved is reported lost, as after any crash.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import functools
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from . import oskit
from .config import Config
from .errors import ApiError, Conflict, Forbidden, NotFound, Unavailable
from .events import EventHub
from .metrics import Metrics
from .model import (
    ACTIVE_STATES, Event, Process, State, StopReason, now_iso, iso_to_epoch,
    stopped_event, transition,
)
from .output import OutputReader, OutputStore
from .recent import RecentRecords
from .registry import DuplicateKey, Registry, RegistryError, StorageError
from .unsaved import UnsavedRecords

# Environment variables a child must never inherit from the daemon.
_PRIVATE_ENV_PREFIXES = ("LISTEN_", "WATCHDOG_", "STABLEHAND_")
_PRIVATE_ENV_NAMES = frozenset({"NOTIFY_SOCKET"})
ID_VAR = "STABLEHAND_ID"
INSTANCE_VAR = "STABLEHAND_INSTANCE"
KILL_WAIT = 5.0          # after SIGKILL, how long to wait for the tree to vanish
HOUSEKEEPING_INTERVAL = 1.0
LATE_ORPHAN_PASSES = 3   # a stop's passes over its tree (see _run_stop)
ORPHAN_SETTLE = 0.25     # how long an orphan whose marker cannot be read may hold up a stop
ORPHAN_RECHECK = 0.002   # how often a stop looks again at such an orphan
EXPIRE_RETRY = 1.0       # a timeout whose stop could not be committed is tried again after this
DEVNULL = os.devnull


@dataclasses.dataclass(slots=True)
class StartSpec:
    """A validated request to start a process."""

    argv: list[str]
    command: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    ref: str | None = None
    timeout: float | None = None
    grace: float | None = None
    stdin: str = "null"   # "null" | "pipe"
    stdout_mode: str = "capture"   # "capture" | "discard"
    stderr_mode: str = "capture"

    def fingerprint(self) -> str:
        """Stable hash of the request, to tell an Idempotency-Key retry from a reuse."""
        body = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


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


@dataclasses.dataclass(slots=True)
class _Adopted:
    """The orphans re-parented to the daemon, as read in one turn of the loop."""

    by_id: dict[str, list[oskit.ProcInfo]] = dataclasses.field(default_factory=dict)
    unsettled: bool = False   # an orphan first seen < ORPHAN_SETTLE ago could not be told


Listener = Callable[[Process], None]


class Supervisor:
    def __init__(self, config: Config, registry: Registry, outputs: OutputStore) -> None:
        self.config = config
        self.registry = registry
        self.outputs = outputs
        self.log = structlog.get_logger("stablehand.supervisor")
        self._live: dict[int, Process] = {}          # queued / running / terminating
        self._children: dict[int, Child] = {}        # by record id
        self._by_pid: dict[int, Child] = {}          # our own children, by OS pid
        self._queue: collections.deque[int] = collections.deque()
        self._busy = 0                               # slots held (running + terminating)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_waiters: dict[int, list[asyncio.Future[Process | None]]] = {}
        self._recent = RecentRecords()                # settled records, read without SQLite
        self._stop_sets: dict[int, dict[int, int]] = {}    # id -> tree members being stopped
        self._listeners: list[Listener] = []
        self.events = EventHub()
        self.metrics = Metrics()
        self._listeners += [self.events.publish, self.metrics.observe]
        self._guard: asyncio.Task[None] | None = None
        self._instance = ""
        self._boot_id = oskit.boot_id()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._adopted_now: _Adopted | None = None
        self._unsure_since: dict[tuple[int, int], float] = {}  # (pid, ticks) → first seen
        self._last_busy = 0.0                        # loop time of the last start or stop
        self._unsaved = UnsavedRecords(registry, self.log)   # memory ahead of SQLite
        self._admission: dict[int, asyncio.Future[None]] = {}  # id -> its `running` write
        self._abandoned: set[int] = set()            # spawned, pid not committed: being killed
        # What every child inherits from the daemon's environment, read once.
        self._base_env = {k: v for k, v in os.environ.items()
                          if k not in _PRIVATE_ENV_NAMES and not k.startswith(_PRIVATE_ENV_PREFIXES)}

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Take ownership: become subreaper, reconcile the registry, start the queue."""
        self._loop = asyncio.get_running_loop()
        oskit.become_subreaper()
        reset = oskit.reset_inherited_signals()
        if reset:
            self.log.info("daemon.signals_reset", signals=reset)
        self._instance = await self.registry.get_meta("instance") or ""
        if not self._instance:
            self._instance = uuid.uuid4().hex
            await self.registry.set_meta("instance", self._instance)
        await self._reconcile()
        self.outputs.refill_in_background()
        self._admit()
        self._guard = self._loop.create_task(self._housekeeping())

    async def shutdown(self) -> None:
        """Stop (or detach from) every child, per the ``shutdown`` setting."""
        self._closing = True
        self.outputs.close()
        if self._guard is not None:
            self._guard.cancel()
        if self.config.shutdown == "stop":
            graces = [0.0]
            for proc in list(self._live.values()):
                if proc.state is State.RUNNING:
                    graces.append(self._grace_of(proc))
                    self._begin_stop(proc, StopReason.KILL, graces[-1], signal.SIGTERM)
            # Stops that never escalate on their own (psys's SIGTERM-only route) are
            # finished with SIGKILL once every grace period has passed.
            _, pending = await asyncio.wait(list(self._tasks) or [_done()], timeout=max(graces) + 1)
            if pending:
                for process_id, members in list(self._stop_sets.items()):
                    child = self._children.get(process_id)
                    if child is not None:
                        self._signal_tree(child, signal.SIGKILL, members)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        else:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for child in list(self._children.values()):
            self._forget_child(child)
        self._reap()
        await self._unsaved.close()

    # --- queries -------------------------------------------------------------------

    async def get(self, process_id: int) -> Process:
        """The committed record (shared when idle: do not change it), or the
        in-memory one while its latest state is unsaved."""
        record = self._unsaved.get(process_id)
        if record is not None:
            return record
        record = self._recent.get(process_id)
        if record is not None:
            return record
        generation = self._recent.generation
        record = await self.registry.get(process_id)
        if record is None:
            raise NotFound(f"process {process_id} not found")
        self._recent.offer(record, generation)
        return record

    async def list_processes(self, **filters: Any) -> list[Process]:
        """``Registry.list`` (same arguments), unsaved records shown as memory has them.

        The filters apply to SQLite's committed rows: while storage fails, a record
        whose exit is unsaved is returned by ``state=running`` (showing it idle) and
        missing from ``state=idle``.
        """
        return self._unsaved.overlay(await self.registry.list(**filters))

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def counts(self) -> dict[str, int]:
        counts = collections.Counter(p.state.value for p in list(self._live.values()))
        return {"queued": counts["queued"], "running": counts["running"],
                "terminating": counts["terminating"]}

    # --- create ------------------------------------------------------------------

    async def create(self, spec: StartSpec, idempotency_key: str | None = None) -> tuple[Process, bool]:
        """Create a record and start (or queue) it. Returns (record, created)."""
        if self._closing:
            raise Unavailable("the daemon is shutting down")
        allowed = self.config.allowed_programs
        if allowed and spec.argv[0] not in allowed:
            raise Forbidden(f"program {spec.argv[0]!r} is not in allowed_programs")
        fingerprint = spec.fingerprint() if idempotency_key else None
        if idempotency_key:
            existing = await self.registry.by_idempotency_key(idempotency_key)
            if existing is not None:
                return self._check_replay(existing, fingerprint), False
        return await self._owned(self._create(spec, idempotency_key, fingerprint))

    def _check_replay(self, existing: Process, fingerprint: str | None) -> Process:
        if existing.request_hash != fingerprint:
            raise Conflict("Idempotency-Key was already used with a different request body")
        return existing

    async def _create(self, spec: StartSpec, key: str | None, fingerprint: str | None) -> tuple[Process, bool]:
        event = Event.ADMIT if self._has_slot() and not self._queue else Event.ENQUEUE
        state, _ = transition(None, event)
        proc = Process(id=0, state=state, argv=spec.argv, created_at=now_iso(), ref=spec.ref,
                       command=spec.command, env=spec.env, cwd=spec.cwd, timeout=spec.timeout,
                       grace=spec.grace, stdin=spec.stdin, stdout_mode=spec.stdout_mode,
                       stderr_mode=spec.stderr_mode, idempotency_key=key,
                       request_hash=fingerprint)
        if state is State.RUNNING:
            self._busy += 1
        try:
            proc.id = await self.registry.insert(proc.columns() | {"id": None})
        except DuplicateKey:
            if state is State.RUNNING:
                self._release_slot()
            existing = await self.registry.by_idempotency_key(key or "")
            if existing is None:
                raise
            return self._check_replay(existing, fingerprint), False
        except BaseException as exc:
            if state is State.RUNNING:
                self._release_slot()
            if isinstance(exc, StorageError):
                self.log.warning("process.not_created", error=exc.message)
                raise StorageError(f"{exc.message}; the process was not created") from None
            raise  # WriteRejected (a 400) among others: this request alone fails
        self._live[proc.id] = proc
        self.log.info("process.created", process_id=proc.id, state=proc.state.value, argv=proc.argv)
        self._emit(proc)
        if state is State.RUNNING:
            await self._spawn(proc)  # never raises for a failure before the child runs
            return proc.copy(), True
        snapshot = proc.copy()
        self._queue.append(proc.id)
        self._admit()  # a slot may have been freed while the insert was committing
        return snapshot, True

    def _has_slot(self) -> bool:
        return self.config.max_concurrent == 0 or self._busy < self.config.max_concurrent

    def _release_slot(self) -> None:
        self._busy -= 1
        self._admit()

    def _admit(self) -> None:
        """Start queued records, oldest first, while slots are free."""
        while self._queue and self._has_slot() and not self._closing:
            proc = self._live[self._queue.popleft()]
            self._apply(proc, Event.ADMIT)
            self._busy += 1
            commit = self._admission[proc.id] = self._write(proc, state=proc.state)
            self._spawn_task(self._admit_one(proc, commit))

    async def _admit_one(self, proc: Process, commit: asyncio.Future[None]) -> None:
        try:
            await commit
        except RegistryError:
            pass  # _after_admission reads the outcome
        if self._admission.get(proc.id) is commit and proc.state is State.RUNNING:
            await self._after_admission(proc)
        # else a kill began meanwhile: it finishes the record, or undoes itself and
        # hands the record back to _after_admission (_undo_stop)

    async def _after_admission(self, proc: Process) -> None:
        """Spawn an admitted record once ``running`` is committed; if that commit
        failed, never spawn it: it ends idle/failed and frees its slot."""
        commit = self._admission.pop(proc.id)
        error = commit.exception()
        if error is not None:
            await self._finish(proc, Event.SPAWN_FAILED, error=f"not started: {_message(error)}")
            return
        self._emit(proc)
        await self._spawn(proc)

    def _child_env(self, proc: Process) -> dict[str, str]:
        env = self._base_env.copy()
        env.update(proc.env)
        env[ID_VAR] = str(proc.id)
        env[INSTANCE_VAR] = self._instance
        return env

    async def _spawn(self, proc: Process) -> None:
        """Start a record that is committed as running (unless it was killed meanwhile).

        Never raises for what fails before the child runs: the record ends
        idle/failed with the error and frees its slot. A pid that cannot be
        committed costs the child its life (:meth:`_abandon`).
        """
        if proc.state is not State.RUNNING:
            return  # killed between admission and spawn: the kill path finishes it
        self._note_busy()
        try:
            stdout, stderr = self.outputs.prepare(proc.id)
            stdout = DEVNULL if proc.stdout_mode == "discard" else stdout
            stderr = DEVNULL if proc.stderr_mode == "discard" else stderr
            spawned = oskit.spawn(proc.argv, self._child_env(proc), proc.cwd, stdout, stderr,
                                  stdin_pipe=proc.stdin == "pipe")
        except Exception as exc:  # noqa: BLE001 - whatever it is, nothing runs: say why on the record
            if not isinstance(exc, (oskit.SpawnError, OSError)):
                self.log.error("process.spawn_error", process_id=proc.id, error=repr(exc))
            await self._finish(proc, Event.SPAWN_FAILED, error=str(exc) or type(exc).__name__)
            return
        child = Child(id=proc.id, pid=spawned.pid, ticks=-1, pidfd=spawned.pidfd,
                      own=True, exited=self._loop.create_future(), stdin_fd=spawned.stdin_fd)
        self._watch(child)
        proc.pid, proc.boot_id, proc.started_at = spawned.pid, self._boot_id, now_iso()
        commit = self._write(proc, pid=proc.pid, boot_id=proc.boot_id, started_at=proc.started_at)
        self._arm_timeout(proc, child)
        self.log.info("process.spawned", process_id=proc.id, pid=spawned.pid)
        try:
            await commit
        except RegistryError as exc:
            await self._abandon(proc, child, exc)
            return
        # The start time proves identity after a restart. It is read only now, once
        # the child is past exec (reading /proc/<pid>/stat during exec waits on it);
        # until it is stored, a restarted daemon identifies the child by its
        # STABLEHAND_ID marker instead. Our own unreaped child cannot be recycled.
        ticks = None if child.exited.done() else oskit.start_ticks(spawned.pid)
        if ticks is not None:
            child.ticks = proc.pid_start_time = ticks
            self._write(proc, pid_start_time=ticks)

    async def _abandon(self, proc: Process, child: Child, error: BaseException) -> None:
        """The pid of a child just spawned could not be committed: kill its tree, fail the record.

        Its creator is told the start failed (and a daemon restarted meanwhile
        would know the child only by its marker). A child that already ended
        decides the record's end instead, and so does a kill under way, once
        committed (if its ``terminating`` fails too, the undo leaves it to us).
        """
        if proc.state is State.IDLE or child.exited.done():
            return
        self._abandoned.add(proc.id)
        if child.timer is not None:
            child.timer.cancel()
            child.timer = None
        self.log.warning("process.abandoned", process_id=proc.id, pid=child.pid,
                         error=_message(error))
        try:
            status = await self._stop_members(child, self._signal_tree(child, signal.SIGKILL, {}), 0)
        finally:
            self._abandoned.discard(proc.id)
        if proc.state is State.RUNNING:
            await self._finish(proc, Event.SPAWN_FAILED, status=status, error=(
                f"stopped right after it started: its pid could not be recorded ({_message(error)})"))

    def _watch(self, child: Child) -> None:
        self._children[child.id] = child
        if child.own:
            self._by_pid[child.pid] = child
        self._loop.add_reader(child.pidfd, self._on_pidfd, child)

    def _arm_timeout(self, proc: Process, child: Child) -> None:
        if proc.timeout is None:
            return
        started = iso_to_epoch(proc.started_at) or _wall()
        delay = max(0.0, started + proc.timeout - _wall())
        child.timer = self._loop.call_later(delay, self._expire, proc.id)

    # --- exits ---------------------------------------------------------------------

    def _on_pidfd(self, child: Child) -> None:
        if child.own:
            self._reap()
        else:  # re-adopted: not ours to reap; the pidfd alone says it ended
            self._exited(child, None)

    def _reap(self) -> None:
        for pid, status in oskit.reap_all():
            child = self._by_pid.get(pid)
            if child is not None:
                self._exited(child, status)
            else:
                self.log.debug("orphan.reaped", pid=pid)

    def _exited(self, child: Child, status: oskit.ExitStatus | None) -> None:
        self._forget_child(child)
        child.exited.set_result(status)
        proc = self._live.get(child.id)
        if proc is None or proc.state is not State.RUNNING or proc.id in self._abandoned:
            return  # terminating (or abandoned): the stop task finishes the record
        self._settle_exit(proc, child, status)

    def _settle_exit(self, proc: Process, child: Child, status: oskit.ExitStatus | None) -> None:
        """Finish a running record whose leader exited, and sweep what it left in its group."""
        if status is not None and status.code == 0:
            event, error = Event.EXITED_OK, None
        elif status is None:
            event, error = Event.EXITED_ERROR, ("exit status unknown: the process was re-adopted "
                                                "after a daemon restart and is not the daemon's child")
        elif status.signal:
            event, error = Event.EXITED_ERROR, f"killed by {status.signal_name}"
        else:
            event, error = Event.EXITED_ERROR, f"exited with status {status.code}"
        self._finish(proc, event, status=status, error=error)
        if oskit.group_has_members(child.pid):
            self._spawn_task(self._sweep(child))

    def _forget_child(self, child: Child) -> None:
        if self._children.get(child.id) is child:
            del self._children[child.id]
        if self._by_pid.get(child.pid) is child:
            del self._by_pid[child.pid]
        if child.pidfd >= 0:
            self._loop.remove_reader(child.pidfd)
            oskit.close_fd(child.pidfd)
            child.pidfd = -1
        if child.timer is not None:
            child.timer.cancel()
        oskit.close_fd(child.stdin_fd)
        child.stdin_fd = None

    async def _sweep(self, child: Child) -> None:
        """Stop what an exited leader left behind in its group."""
        members = self._signal_tree(child, signal.SIGTERM, {})
        if members:
            self.log.info("process.stragglers", process_id=child.id, count=len(members))
        await self._stop_members(child, members, self.config.grace)

    # --- stopping -------------------------------------------------------------------

    async def stop(self, process_id: int, *, grace: float | None = None,
                   sig: int = signal.SIGTERM, escalate: bool = True) -> Process:
        """Kill/stop: queued → idle/canceled; running → terminating (then idle/canceled).

        ``escalate=False`` sends ``sig`` only and never SIGKILL (psys's route);
        :meth:`force_kill` can still finish such a stop. NotFound for an unknown
        id; Conflict when it is already idle or terminating.
        """
        proc = self._live.get(process_id)
        if proc is None:
            await self.get(process_id)                # NotFound, or it exists but is idle
            proc = self._live.get(process_id)
            if proc is None:
                raise Conflict(f"process {process_id} is already idle")
        if proc.state is State.QUEUED:
            self._queue.remove(process_id)
            self._apply(proc, Event.KILL)
            proc.completed_at = now_iso()
            commit = self._write(proc, state=proc.state, exit_state=proc.exit_state,
                                 completed_at=proc.completed_at)
            record: Process = await self._owned(self._canceled(proc, commit))
            return record
        if proc.state is not State.RUNNING:
            raise Conflict(f"process {process_id} is already {proc.state.value}")
        if process_id in self._abandoned:
            raise Conflict(f"process {process_id} is already being stopped: "
                           "its start could not be recorded")
        grace = self._grace_of(proc) if grace is None else grace
        commit = self._begin_stop(proc, StopReason.KILL, grace if escalate else None, sig)
        snapshot = proc.copy()
        try:
            await asyncio.shield(commit)
        except StorageError as exc:  # undone by _run_stop: still running, nothing was sent
            raise StorageError(f"{exc.message}; process {process_id} was not stopped") from None
        return snapshot

    async def _canceled(self, proc: Process, commit: asyncio.Future[None]) -> Process:
        """A queued record was canceled: idle once that is committed, else back in the queue."""
        try:
            await commit
        except RegistryError as exc:
            proc.state, proc.exit_state, proc.completed_at = State.QUEUED, None, None
            self._unsaved.mark(proc)  # whatever raced the failure is written over
            bisect.insort(self._queue, proc.id)
            self._admit()
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc.message}; process {proc.id} is still queued") from None
            raise
        await self._finished(proc, _done())
        return proc.copy()

    def _grace_of(self, proc: Process) -> float:
        return proc.grace if proc.grace is not None else self.config.grace

    def _expire(self, process_id: int) -> None:
        proc = self._live.get(process_id)
        if proc is not None and proc.state is State.RUNNING and process_id not in self._abandoned:
            self.log.info("process.timeout", process_id=process_id, timeout=proc.timeout)
            self._begin_stop(proc, StopReason.TIMEOUT, self._grace_of(proc), signal.SIGTERM)

    async def force_kill(self, process_id: int) -> Process:
        """SIGKILL the whole tree now, whatever stop is under way; returns the idle record."""
        proc = self._live.get(process_id)
        if proc is not None and proc.state in (State.QUEUED, State.RUNNING):
            await self.stop(process_id, grace=0, sig=signal.SIGKILL)
        elif proc is not None and proc.state is State.TERMINATING:
            child = self._children.get(process_id)
            members = self._stop_sets.get(process_id)
            if child is not None and members is not None:
                self._signal_tree(child, signal.SIGKILL, members)
        record, _ = await self.wait(process_id, KILL_WAIT + 1)
        return record

    def _begin_stop(self, proc: Process, reason: StopReason, grace: float | None,
                    sig: int) -> asyncio.Future[None]:
        """Commit ``terminating``, then (in an owned task) signal and escalate.

        A grace of 0 means no grace at all: the first signal is SIGKILL.
        """
        if grace == 0:
            sig = signal.SIGKILL
        self._note_busy()
        before = _StopFields.of(proc)
        child = self._children.get(proc.id)
        self._apply(proc, Event.KILL if reason is StopReason.KILL else Event.EXPIRE)
        proc.stop_reason, proc.stop_requested_at = reason, now_iso()
        proc.stop_grace, proc.stop_signal = grace, oskit.signal_name(sig)
        commit = self._write(
            proc, state=proc.state, stop_reason=reason, stop_requested_at=proc.stop_requested_at,
            stop_grace=grace, stop_signal=proc.stop_signal)
        self._spawn_task(self._run_stop(proc, commit, sig, grace, (before, child)))
        return commit

    async def _run_stop(self, proc: Process, commit: Awaitable[None], sig: int,
                        grace: float | None,
                        undo: tuple[_StopFields, Child | None] | None = None) -> None:
        try:
            await commit
        except RegistryError as exc:
            if undo is not None and not self._closing:
                self._undo_stop(proc, *undo, exc)
                return
            # shutting down: stop it anyway; its end is saved when storage allows
        child = self._children.get(proc.id)
        status = None
        if child is None:  # killed before it was spawned, or it exited meanwhile
            self._admission.pop(proc.id, None)
            self._emit(proc)
        else:
            try:
                for attempt in range(LATE_ORPHAN_PASSES):
                    # The first pass takes the leader and its tree; later passes take
                    # orphans re-parented to us while it was being stopped.
                    members = self._stop_sets[proc.id] = self._signal_tree(child, sig, {})
                    if attempt == 0:  # signals first: the event and the log can wait
                        self._emit(proc)
                        self.log.info("process.stopping", process_id=proc.id,
                                      signal=oskit.signal_name(sig), grace=grace)
                    status = await self._stop_members(child, members, grace)
                    if not await self._has_late_orphans(proc.id):
                        break
            finally:
                self._stop_sets.pop(proc.id, None)
        await self._finish(proc, stopped_event(proc.stop_reason), status=status)

    def _undo_stop(self, proc: Process, before: _StopFields, child: Child | None,
                   error: BaseException) -> None:
        """``terminating`` could not be committed: nothing was signalled; back to running."""
        reason = proc.stop_reason
        before.restore(proc)
        self._unsaved.mark(proc)  # a rewrite racing this undo is written over
        self.log.warning("process.stop_unsaved", process_id=proc.id, error=_message(error))
        if proc.id in self._abandoned:
            return  # its pid could not be saved either: _abandon kills it and ends the record
        if child is None:  # admitted, not spawned yet: the admission decides again
            admission = self._admission.get(proc.id)
            if admission is None:
                self._finish(proc, Event.LOST, error="its stop could not be recorded and it is gone")
            elif admission.done():
                self._spawn_task(self._after_admission(proc))
            return
        if child.exited.done():  # it exited while the stop was being recorded
            self._settle_exit(proc, child, child.exited.result())
        elif reason is StopReason.TIMEOUT:
            child.timer = self._loop.call_later(EXPIRE_RETRY, self._expire, proc.id)

    def _signal_tree(self, child: Child, sig: int, known: dict[int, int]) -> dict[int, int]:
        """Signal the leader (if unreaped), its group and every member of its tree.

        ``known`` maps member pids to verified pidfds already held; new members
        are added to it. Returns it.
        """
        leader_reaped = child.exited.done()
        for info in self._tree(child, leader_reaped):
            if info.pid not in known and info.pid not in self._by_pid:
                fd = oskit.open_verified_pidfd(info.pid, info.start_ticks)
                if fd is not None:
                    known[info.pid] = fd
        if not leader_reaped:
            oskit.pidfd_signal(child.pidfd, sig)
            if child.own:  # a re-adopted leader is reaped by someone else: no killpg by pid
                oskit.signal_group(child.pid, sig)
        for fd in known.values():
            oskit.pidfd_signal(fd, sig)
        return known

    def _tree(self, child: Child, leader_reaped: bool) -> list[oskit.ProcInfo]:
        """The members of a child's tree, the leader excluded.

        For our own children this walks parent links only: the daemon is a
        subreaper, so every process the leader started is still its descendant
        or has been re-parented to the daemon (an orphan that carries the
        record's STABLEHAND_ID). Group and session members are among those.
        A re-adopted leader is not under us, so its tree is read from a full
        scan of /proc (group, session and descendants).
        """
        if not child.own:
            table = oskit.proc_table()
            return oskit.tree_of(child.pid, child.ticks, leader_reaped, table)
        members = [] if leader_reaped else oskit.descendants(child.pid, child.ticks)
        for orphan in self._orphans_of(child.id):
            members.append(orphan)
            members += oskit.descendants(orphan.pid, orphan.start_ticks)
        return members

    def _orphans_of(self, process_id: int) -> list[oskit.ProcInfo]:
        """Our direct children that are not leaders but carry this record's STABLEHAND_ID."""
        return self._adopted().by_id.get(str(process_id), [])

    async def _has_late_orphans(self, process_id: int) -> bool:
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
            if str(process_id) in adopted.by_id:
                return True
            if not adopted.unsettled:
                return False
            await asyncio.sleep(ORPHAN_RECHECK)

    def _adopted(self) -> _Adopted:
        """Orphans re-parented to the daemon, by the STABLEHAND_ID they carry.

        The daemon's children list holds every child it runs, so reading it per
        stop made a mass stop quadratic. It is read at most once per turn of the
        event loop and shared by every stop begun in that turn. A process
        orphaned after the read is caught by the pass that :meth:`_run_stop`
        makes once the leader is gone.
        """
        if self._adopted_now is None:
            now = self._loop.time()
            adopted = _Adopted()
            unsure: dict[tuple[int, int], float] = {}
            for pid in oskit.adopted_children():
                if pid in self._by_pid:
                    continue
                info = oskit.proc_info(pid)
                if info is None or info.zombie:
                    continue
                marker = oskit.environ_marker(pid, (ID_VAR, INSTANCE_VAR))
                if marker is None:
                    key = (pid, info.start_ticks)
                    first_seen = unsure[key] = self._unsure_since.get(key, now)
                    adopted.unsettled |= now - first_seen < ORPHAN_SETTLE
                elif ID_VAR in marker and marker.get(INSTANCE_VAR) == self._instance:
                    adopted.by_id.setdefault(marker[ID_VAR], []).append(info)
            self._unsure_since = unsure
            self._adopted_now = adopted
            self._loop.call_soon(self._forget_adopted)
        return self._adopted_now

    def _forget_adopted(self) -> None:
        self._adopted_now = None

    async def _stop_members(self, child: Child, members: dict[int, int],
                            grace: float | None) -> oskit.ExitStatus | None:
        """Wait up to ``grace`` (None: forever) for the tree to go, then SIGKILL what is left."""
        try:
            if not await self._wait_gone(child, members, grace):
                self.log.info("process.escalating", process_id=child.id, signal="SIGKILL")
                self._signal_tree(child, signal.SIGKILL, members)
                if not await self._wait_gone(child, members, KILL_WAIT):
                    self.log.warning("process.unkillable", process_id=child.id)
        finally:
            for fd in members.values():
                oskit.close_fd(fd)
        return child.exited.result() if child.exited.done() else None

    async def _wait_gone(self, child: Child, members: dict[int, int], timeout: float | None) -> bool:
        waits: list[asyncio.Future[Any]] = [child.exited]
        readers = []
        for fd in members.values():
            future = self._loop.create_future()
            self._loop.add_reader(fd, self._resolve_once, fd, future)
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

    # --- finishing -----------------------------------------------------------------

    def _finish(self, proc: Process, event: Event, *, status: oskit.ExitStatus | None = None,
                error: str | None = None) -> asyncio.Task[None]:
        """Move a record to idle and free its slot now; the returned (owned) task
        completes once idle is committed and the record's waiters are woken.

        The write is queued before this returns, not when a task first runs, so
        an exit's commit starts in the same turn of the loop as its reap.
        """
        held_slot = proc.state in ACTIVE_STATES
        if held_slot:
            self._cap_output(proc)
            self.outputs.finished(proc.id)
        self._apply(proc, event)
        proc.completed_at = now_iso()
        if status is not None:
            proc.exit_code, proc.exit_signal = status.code, status.signal_name
        if error is not None:
            proc.error = _storable(error)
        commit = self._write(
            proc, state=proc.state, exit_state=proc.exit_state, completed_at=proc.completed_at,
            exit_code=proc.exit_code, exit_signal=proc.exit_signal, error=proc.error,
            stdout_dropped=proc.stdout_dropped, stderr_dropped=proc.stderr_dropped)
        if held_slot:
            self._release_slot()
        return self._spawn_task(self._finished(proc, commit))

    async def _finished(self, proc: Process, commit: Awaitable[None]) -> None:
        try:
            await commit
        except RegistryError:
            pass  # the end happened: it is kept unsaved in memory and saved later (_write)
        finally:
            del self._live[proc.id]  # only now: waiters registered meanwhile are still woken
        self.log.info("process.exited", process_id=proc.id, exit_state=proc.exit_state.value,
                      exit_code=proc.exit_code, exit_signal=proc.exit_signal, error=proc.error)
        final = proc.copy()  # committed or unsaved: waiters and readers need not read it back
        self._recent.add(final)
        for waiter in self._idle_waiters.pop(proc.id, []):
            if not waiter.done():
                waiter.set_result(final)
        self._emit(proc)

    def _write(self, proc: Process, **fields: Any) -> asyncio.Future[None]:
        """Queue a write of ``proc``'s fields; awaiting it raises if it failed.

        A failed write leaves memory ahead of SQLite: the record is marked unsaved
        and written again until it commits (daemon/unsaved.py). Callers that must
        refuse or undo (a kill, an admission, a pid) also see the failure.
        """
        try:
            future = self.registry.update(proc.id, **fields)
        except RegistryError as exc:  # the registry is closed
            future = self._loop.create_future()
            future.set_exception(exc)
        future.add_done_callback(functools.partial(self._written, proc))
        return future

    def _written(self, proc: Process, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._unsaved.mark(proc, future.exception())

    def _apply(self, proc: Process, event: Event) -> None:
        proc.state, exit_state = transition(proc.state, event)
        if exit_state is not None:
            proc.exit_state = exit_state

    def _emit(self, proc: Process) -> None:
        snapshot = proc.copy()
        for listener in self._listeners:
            listener(snapshot)

    # --- waiting and signals ---------------------------------------------------------

    async def wait(self, process_id: int, timeout: float | None) -> tuple[Process, bool]:
        """The record once idle (True), or as it is when ``timeout`` passes (False).

        Liveness is checked before anything is awaited: a record leaves _live
        only after its idle write settled (committed, or kept unsaved in memory,
        which :meth:`get` serves), so a record that is not live reads back idle
        (or not at all: NotFound).
        """
        if process_id not in self._live:
            record = await self.get(process_id)
            return record, record.state is State.IDLE
        # A bare future and timer rather than wait_for(shield(...)): the waiter is this
        # caller's alone, and each wrapper would add a turn of the loop to every wake-up.
        waiter: asyncio.Future[Process | None] = self._loop.create_future()
        self._idle_waiters.setdefault(process_id, []).append(waiter)
        timer = None if timeout is None else self._loop.call_later(timeout, _resolve_future, waiter)
        try:
            record = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            waiters = self._idle_waiters.get(process_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
        if record is None:  # timed out
            return await self.get(process_id), False
        return record, True

    @staticmethod
    def is_signal(number: int) -> bool:
        return number in oskit.valid_signals()

    @staticmethod
    def signal_number(value: str | int) -> int:
        """A signal given by name or number; ValueError if there is no such signal."""
        return oskit.signal_number(value)

    def send_signal(self, process_id: int, sig: int, *, group: bool = False,
                    terminating_ok: bool = False) -> bool:
        """Deliver ``sig`` to a running process (or its group); state is unchanged.

        Returns False if the process already exited. Conflict if it is not running.
        """
        proc = self._live.get(process_id)
        child = self._children.get(process_id)
        allowed = (State.RUNNING, State.TERMINATING) if terminating_ok else (State.RUNNING,)
        if proc is None or proc.state not in allowed or child is None:
            state = proc.state.value if proc else "idle"
            raise Conflict(f"process {process_id} is not running (it is {state})")
        if group and child.own:
            return oskit.signal_group(child.pid, sig)
        return oskit.pidfd_signal(child.pidfd, sig)

    async def record_for_pid(self, pid: int) -> Process | None:
        """The newest record whose process ran as OS ``pid`` (compat routes address by pid)."""
        record = await self.registry.newest_by_pid(pid)
        unsaved = self._unsaved.newest_with_pid(pid)
        if unsaved is not None and (record is None or unsaved.id >= record.id):
            return unsaved
        return record if record is None else (self._unsaved.get(record.id) or record)

    def is_live_leader(self, record: Process) -> bool:
        """Whether ``record``'s process is the one still running under its pid."""
        child = self._children.get(record.id)
        return child is not None and child.pid == record.pid and not child.exited.done()

    @staticmethod
    def pid_exists(pid: int) -> bool:
        return oskit.process_exists(pid)

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
            self._loop.add_reader(pidfd, self._resolve_once, pidfd, gone)
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

    # --- output, stdin, deletion -------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Once a second: reap orphans that exited, keep output within max_output_bytes,
        and, when the last second saw no start or stop, refill the spare output files."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            self._reap()
            for proc in list(self._live.values()):
                if proc.state in ACTIVE_STATES:
                    self._cap_output(proc)
            quiet = self._loop.time() - self._last_busy >= HOUSEKEEPING_INTERVAL
            if quiet and self.outputs.needs_spares():
                self.outputs.refill_in_background()

    def _note_busy(self) -> None:
        """A start or a stop: spare output files are made only once the daemon is quiet again."""
        self._last_busy = self._loop.time()
        self.outputs.pause_refill()

    def _cap_output(self, proc: Process) -> asyncio.Future[None] | None:
        cap = self.config.max_output_bytes
        stdout = self.outputs.enforce_cap(proc.id, "stdout", cap, proc.stdout_dropped)
        stderr = self.outputs.enforce_cap(proc.id, "stderr", cap, proc.stderr_dropped)
        if (stdout, stderr) == (proc.stdout_dropped, proc.stderr_dropped):
            return None
        self.log.info("process.output_truncated", process_id=proc.id, stdout_dropped=stdout,
                      stderr_dropped=stderr)
        proc.stdout_dropped, proc.stderr_dropped = stdout, stderr
        return self._write(proc, stdout_dropped=stdout, stderr_dropped=stderr)

    def is_active(self, process_id: int) -> bool:
        """Whether the process may still change (queued, running or terminating)."""
        return process_id in self._live

    async def read_output(self, process_id: int, stream: str, offset: int,
                          limit: int | None) -> tuple[int, bytes, Process]:
        """(start offset, bytes, record) of a stream; bytes below the dropped mark are gone."""
        record = self._live.get(process_id) or await self.get(process_id)
        dropped = record.stdout_dropped if stream == "stdout" else record.stderr_dropped
        start, data = self.outputs.read(process_id, stream, offset, limit, dropped)
        return start, data, record

    async def output_reader(self, process_id: int, stream: str) -> OutputReader:
        """A stream to read in bounded chunks off the loop (how the HTTP routes read output);
        the dropped mark is looked up at each read, so bytes dropped meanwhile are never sent."""
        record = self._live.get(process_id) or await self.get(process_id)
        field = "stdout_dropped" if stream == "stdout" else "stderr_dropped"
        return self.outputs.reader(process_id, stream,
                                   lambda: int(getattr(self._live.get(process_id, record), field)))

    async def write_stdin(self, process_id: int, data: bytes, timeout: float = 30.0) -> int:
        """Write to a child started with ``stdin: "pipe"``, never blocking the loop."""
        if process_id not in self._live:
            await self.get(process_id)  # NotFound for an unknown id
        child = self._stdin_child(process_id)
        async with child.stdin_lock:
            view, written = memoryview(data), 0
            while written < len(view):
                if child.stdin_fd is None:
                    raise Conflict(f"process {process_id} stdin is closed")
                try:
                    written += oskit.write_nonblocking(child.stdin_fd, view[written:])
                except BlockingIOError:
                    if not await self._writable(child.stdin_fd, timeout):
                        raise Unavailable(f"process {process_id} is not reading its stdin "
                                          f"({written} of {len(view)} bytes written)") from None
                except BrokenPipeError:
                    raise Conflict(f"process {process_id} closed its stdin") from None
            return written

    def stdin_open(self, process_id: int) -> bool:
        """Whether the process has a stdin pipe that can still be written."""
        child = self._children.get(process_id)
        return child is not None and child.stdin_fd is not None

    async def close_stdin(self, process_id: int) -> None:
        if process_id not in self._live:
            await self.get(process_id)  # NotFound for an unknown id
        child = self._stdin_child(process_id)
        oskit.close_fd(child.stdin_fd)
        child.stdin_fd = None

    def _stdin_child(self, process_id: int) -> Child:
        proc = self._live.get(process_id)
        child = self._children.get(process_id)
        if proc is None or child is None or proc.state is not State.RUNNING:
            raise Conflict(f"process {process_id} is not running")
        if proc.stdin != "pipe":
            raise Conflict(f"process {process_id} was not started with stdin: \"pipe\"")
        if child.stdin_fd is None:
            raise Conflict(f"process {process_id} stdin is closed")
        return child

    async def _writable(self, fd: int, timeout: float) -> bool:
        future: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_writer(fd, _resolve_future, future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._loop.remove_writer(fd)

    async def delete(self, process_id: int) -> None:
        """Forget an idle record and its output. Conflict unless idle."""
        await self.get(process_id)
        proc = self._live.get(process_id)
        if proc is not None:
            raise Conflict(f"process {process_id} is {proc.state.value}, not idle")
        self._recent.forget(process_id)
        try:
            await self.registry.delete(process_id)
        finally:
            self._recent.forget(process_id)  # and what a read racing the deletion kept
        self._unsaved.forget(process_id)
        self.outputs.remove(process_id)
        self.log.info("process.deleted", process_id=process_id)

    # --- reconciliation at start-up ------------------------------------------------

    async def _reconcile(self) -> None:
        """Make the registry and the machine agree before serving (see README, 'Restarts')."""
        records = await self.registry.in_states([State.QUEUED, State.RUNNING, State.TERMINATING])
        marked = self._scan_markers()
        for proc in records:
            self._live[proc.id] = proc
            if proc.state is State.QUEUED:
                self._queue.append(proc.id)
                continue
            found = marked.get(proc.id)
            if found is not None and (proc.pid is None or
                                      (proc.pid == found.pid and proc.pid_start_time is None)):
                # crashed between spawn and the commit of its pid or start time
                proc.pid, proc.pid_start_time = found.pid, found.start_ticks
                proc.boot_id, proc.started_at = self._boot_id, proc.started_at or now_iso()
                await self.registry.update(proc.id, pid=proc.pid, pid_start_time=proc.pid_start_time,
                                           boot_id=proc.boot_id, started_at=proc.started_at)
            pidfd = None
            if proc.pid is not None and proc.boot_id == self._boot_id:
                pidfd = oskit.open_verified_pidfd(proc.pid, _ticks(proc.pid_start_time))
            if pidfd is not None and not self._still_ours(proc):
                oskit.close_fd(pidfd)
                pidfd = None
            if pidfd is None:
                await self._record_lost(proc)
            else:
                self._adopt(proc, pidfd)
        for process_id, info in marked.items():
            proc = self._live.get(process_id)
            if proc is None or proc.pid != info.pid:
                self._spawn_task(self._stop_stray(process_id, info))

    def _still_ours(self, proc: Process) -> bool:
        """Whether the process at ``proc.pid`` (start time already matched) is really this record's.

        A zombie nobody reaped yet ended while we were down. A live process must
        also carry this record's STABLEHAND_ID and instance when its environment
        can be read: defence in depth on top of the start time.
        """
        if not oskit.is_alive(proc.pid, _ticks(proc.pid_start_time)):
            return False
        marker = oskit.environ_marker(proc.pid, (ID_VAR, INSTANCE_VAR))
        return marker is None or (marker.get(ID_VAR) == str(proc.id)
                                  and marker.get(INSTANCE_VAR) == self._instance)

    def _scan_markers(self) -> dict[int, oskit.ProcInfo]:
        """Session leaders on this machine that carry our instance's STABLEHAND_ID."""
        found: dict[int, oskit.ProcInfo] = {}
        for info in oskit.proc_table():
            if info.pid != info.session:
                continue
            marker = oskit.environ_marker(info.pid, (ID_VAR, INSTANCE_VAR))
            if marker and marker.get(INSTANCE_VAR) == self._instance and \
                    marker.get(ID_VAR, "").isdigit():
                found[int(marker[ID_VAR])] = info
        return found

    async def _record_lost(self, proc: Process) -> None:
        self._busy += 1  # _finish releases the slot an active record holds
        if proc.state is State.RUNNING:
            await self._finish(proc, Event.LOST, error=(
                "exit status lost: the process ended while the daemon was not running"))
        else:
            await self._finish(proc, stopped_event(proc.stop_reason))

    def _adopt(self, proc: Process, pidfd: int) -> None:
        self._busy += 1
        child = Child(id=proc.id, pid=proc.pid, ticks=_ticks(proc.pid_start_time), pidfd=pidfd,
                      own=False, exited=self._loop.create_future())
        self._watch(child)
        self.log.info("process.adopted", process_id=proc.id, pid=proc.pid, state=proc.state.value)
        if proc.state is State.RUNNING:
            self._arm_timeout(proc, child)
            return
        requested = iso_to_epoch(proc.stop_requested_at) or _wall()
        grace = proc.stop_grace if proc.stop_grace is not None else self._grace_of(proc)
        remaining = max(0.0, requested + grace - _wall())
        done: asyncio.Future[None] = self._loop.create_future()
        done.set_result(None)
        self._spawn_task(self._run_stop(proc, done, oskit.signal_number(proc.stop_signal or "SIGTERM"),
                                        remaining))

    async def _stop_stray(self, process_id: int, info: oskit.ProcInfo) -> None:
        """A process of ours that the registry says should not exist: stop it."""
        pidfd = oskit.open_verified_pidfd(info.pid, info.start_ticks)
        if pidfd is None:
            return
        self.log.warning("process.stray", process_id=process_id, pid=info.pid)
        child = Child(id=process_id, pid=info.pid, ticks=info.start_ticks, pidfd=pidfd, own=False,
                      exited=self._loop.create_future())
        self._loop.add_reader(pidfd, self._resolve_once, pidfd, child.exited)
        try:
            members = self._signal_tree(child, signal.SIGTERM, {})
            await self._stop_members(child, members, self.config.grace)
        finally:
            self._loop.remove_reader(pidfd)
            oskit.close_fd(pidfd)

    def _resolve_once(self, fd: int, future: asyncio.Future[Any]) -> None:
        """A pidfd turned readable (its process exited): resolve and stop watching it."""
        self._loop.remove_reader(fd)
        if not future.done():
            future.set_result(None)

    # --- task ownership --------------------------------------------------------------

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if isinstance(task.exception(), ApiError):
                return  # an answer for a caller (409, 503...), not a fault
            self.log.error("supervisor.task_failed", error=repr(task.exception()))

    async def _owned(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run state-changing work in an owned task; a cancelled caller does not cut it short."""
        return await asyncio.shield(self._spawn_task(coro))


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
        proc.state, proc.stop_reason, proc.stop_requested_at = (
            self.state, self.stop_reason, self.stop_requested_at)
        proc.stop_grace, proc.stop_signal = self.stop_grace, self.stop_signal


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, ApiError) else (str(error) or type(error).__name__)


def _storable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates, say from a file name) escaped,
    so SQLite can store it and JSON can carry it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _done() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _wall() -> float:
    return time.time()


def _ticks(value: float | None) -> int | None:
    return None if value is None else int(value)
