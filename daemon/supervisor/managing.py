"""Managed processes: runs, restarts with backoff, health checks, readiness (issue 19).

A managed record (daemon/managed.py) stays ``running`` from its first run to its
end; its child is started again, as a new *run*, when it exits (per its restart
policy), turns unhealthy, or a client asks for a restart. This module decides;
running.py spawns, stopping.py stops a run's tree, and each run is a row in the
registry's ``runs`` table.

How a run ends, and what follows:

* It **exits** on its own: ``on_failure`` restarts it after a non-zero exit (or a
  signal), ``always`` after any exit, ``never`` never. Past ``max_restarts`` the
  record ends idle/failed, its error naming the count.
* It turns **unhealthy** (``failure_threshold`` probes in a row failed): its tree is
  stopped (SIGTERM, the record's grace, SIGKILL) and the end counts as a failure.
* A client **restarts** it: its tree is stopped likewise and the next run starts at
  once, the backoff reset.
* A **kill** or the record's **timeout** ends the managed process for good, also
  while it backs off (the stop finds no child and ends the record canceled).

The restart is the event ``RUN_ENDED`` in the transition table (running → running).
Before the next run's timer is armed, the run's end and the managed state are
committed (or kept unsaved, if storage fails) and the keeper's exit acknowledged:
the keeper refuses a spawn under an id whose exit it still holds, and a lost
keeper is waited for. A spawn that fails for the keeper's reasons (lost, or the id
still held) counts as a failed run and is retried after the backoff; a spawn the
program itself refuses (not found, not executable) ends the record. Backoff
timers, probes and readiness waits are tasks and timer handles on the loop:
nothing here blocks it. A probe result that changes neither the health status nor
the count of failures in a row writes, emits and logs nothing (issue 19: 200
watched runs must cost under 5% of a core). A daemon restart re-arms a backoff
from ``nextRestartAt`` (reconcile.py) and takes up a run the keeper still holds.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from .. import oskit
from ..errors import Conflict
from ..keeper.client import KeeperError
from ..managed import Health, ManagedState, Policy, Status
from ..model import Event, Process, State, iso_to_epoch, now_iso
from ..output import OutputReader
from ..registry import RegistryError
from . import probes, readiness
from .children import ID_VAR, INSTANCE_VAR, Child
from .terminating import wall

if TYPE_CHECKING:
    from .running import Runner


class Managing:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._log = runner.log
        self._timers: dict[int, asyncio.TimerHandle] = {}          # id -> the next run's start
        self._watches: dict[int, probes.HealthWatch] = {}
        self._ready: dict[int, asyncio.Task[None]] = {}
        self._started: dict[int, list[asyncio.Future[None]]] = {}  # restart requests waiting
        self._rows: dict[int, asyncio.Future[Any]] = {}            # id -> its last runs write

    # --- runs starting ---------------------------------------------------------------

    @staticmethod
    def begin(proc: Process) -> None:
        """A new managed record: its state before the first run."""
        if proc.managed is not None and proc.managed_state is None:
            proc.managed_state = ManagedState(
                health_status=Health.STARTING if proc.managed.health_check else Health.DISABLED)

    def run_started(self, proc: Process, child: Child, *, resumed: bool = False) -> None:
        """A run began (``resumed``: a daemon restart took up a run the keeper still held)."""
        spec, state = proc.managed, proc.managed_state
        assert spec is not None and state is not None
        if not resumed:
            state.run = child.run or state.run + 1   # the number its marker carries
            state.status = Status.STARTING if spec.ready else Status.RUNNING
            state.health_status = Health.STARTING if spec.health_check else Health.DISABLED
            state.consecutive_health_failures = 0
            state.next_restart_at = None
            self._runner.write(proc, managed_state=state)
            self._note(proc.id, self._runner.registry.run_started(proc.id, state.run, child.pid,
                                                                  now_iso()))
            self._runner.emit(proc)
        for waiter in self._started.pop(proc.id, []):
            if not waiter.done():
                waiter.set_result(None)
        self._watch(proc, child)

    def _watch(self, proc: Process, child: Child) -> None:
        spec = proc.managed
        assert spec is not None
        env, cwd = self._probe_env(proc), proc.cwd
        if spec.health_check is not None:
            watch = probes.HealthWatch(
                spec.health_check, env=env, cwd=cwd,
                on_result=lambda ok, why, failures: self._health(proc, ok, why, failures),
                on_unhealthy=lambda why: self._unhealthy(proc, child, why))
            self._watches[proc.id] = watch
            watch.start()
        if spec.ready is not None and proc.managed_state and \
                proc.managed_state.status is Status.STARTING:
            outputs = self._runner.outputs
            sources = [(outputs.reader(proc.id, stream), outputs.size(proc.id, stream))
                       for stream in ("stdout", "stderr")]   # this run's output starts there
            self._ready[proc.id] = self._runner.tasks.spawn(self._until_ready(proc, sources))

    async def _until_ready(self, proc: Process, sources: list[tuple[OutputReader, int]]) -> None:
        spec, state = proc.managed, proc.managed_state
        assert spec is not None and spec.ready is not None and state is not None
        await readiness.wait_ready(spec.ready, check=spec.health_check,
                                   env=self._probe_env(proc), cwd=proc.cwd, outputs=sources)
        if proc.state is State.RUNNING and state.status is Status.STARTING:
            state.status = Status.RUNNING
            self._runner.write(proc, managed_state=state)
            self._runner.emit(proc)
            self._log.info("process.ready", process_id=proc.id, run=state.run)

    def _probe_env(self, proc: Process) -> dict[str, str]:
        """The run's environment without its marker: an exec probe is the daemon's own child,
        never one of the record's processes (a marker scan must not take it for one)."""
        return {k: v for k, v in self._runner.markers.env(proc).items()
                if k not in (ID_VAR, INSTANCE_VAR)}

    def _health(self, proc: Process, healthy: bool, reason: str | None, failures: int) -> None:
        state = proc.managed_state
        if state is None or proc.state is not State.RUNNING:
            return
        status = Health.HEALTHY if healthy else \
            (Health.UNHEALTHY if state.health_status is not Health.STARTING or failures > 1 else
             Health.STARTING)
        if (status, failures) == (state.health_status, state.consecutive_health_failures):
            return
        state.health_status, state.consecutive_health_failures = status, failures
        if reason:
            state.last_error = f"health check: {reason}"
        self._runner.write(proc, managed_state=state)
        self._runner.emit(proc)

    def _unhealthy(self, proc: Process, child: Child, reason: str | None) -> None:
        if proc.state is not State.RUNNING or child.exited.done():
            return
        self._log.warning("process.unhealthy", process_id=proc.id, reason=reason)
        self._end_run(proc, child, f"unhealthy: {reason}" if reason else "unhealthy")

    def _end_run(self, proc: Process, child: Child, why: str) -> None:
        """Stop a run's tree (its grace, then SIGKILL); its exit then decides what follows."""
        child.ending = why
        runner = self._runner
        runner.tasks.spawn(self._stop_tree(child, runner.grace_of(proc)))

    async def _stop_tree(self, child: Child, grace: float) -> None:
        members = await self._runner.trees.signal_tree(child, signal.SIGTERM, {})
        await self._runner.trees.stop_members(child, members, grace)

    # --- runs ending -----------------------------------------------------------------

    def run_ended(self, proc: Process, child: Child, status: oskit.ExitStatus | None,
                  event: Event, error: str | None) -> str | None | bool:
        """A run's leader exited. Returns False when the record should end (the caller
        finishes it with the returned error, if a string), True when the next run is
        scheduled."""
        spec, state = proc.managed, proc.managed_state
        assert spec is not None and state is not None
        self._forget_run(proc.id)
        why = child.ending
        reason = "restarted" if why == "restarted" else "unhealthy" if why else "exited"
        ended = now_iso()
        exit_code = status.code if status else None
        exit_signal = status.signal_name if status else None
        self._note(proc.id, self._runner.registry.run_ended(proc.id, state.run, ended, exit_code,
                                                            exit_signal, reason))
        state.last_exit = {"exit_code": exit_code, "exit_signal": exit_signal, "reason": reason,
                           "ended_at": ended}
        if reason == "restarted":
            delay = 0.0
            state.restarts_in_a_row = 0
        else:
            failed = why is not None or event is not Event.EXITED_OK
            if not spec.restart.wants_restart(not failed):
                state.status = Status.STOPPED
                return why or error or False
            limit = spec.restart.max_restarts
            if limit is not None and state.restart_count >= limit:
                state.status = Status.STOPPED
                if not failed:
                    return False   # a clean last exit ends it as a success
                return f"{why or error or 'exited'}; gave up after {state.restart_count} restarts"
            uptime_ms = 1000 * (wall() - (iso_to_epoch(proc.started_at) or wall()))
            if uptime_ms > spec.restart.max_backoff_ms:
                state.restarts_in_a_row = 0   # it stayed up: a crash loop starts over
            state.restarts_in_a_row += 1
            delay = spec.restart.backoff_ms(state.restarts_in_a_row) / 1000
        state.last_error = why or error
        self._runner.table.apply(proc, Event.RUN_ENDED)
        self._schedule(proc, delay)
        return True

    def _schedule(self, proc: Process, delay: float) -> None:
        state = proc.managed_state
        assert state is not None
        runner = self._runner
        state.status = Status.BACKING_OFF
        state.next_restart_at = _iso_in(delay)
        commit = runner.write(proc, managed_state=state)
        from_keeper = proc.id in runner.from_keeper
        runner.from_keeper.discard(proc.id)
        self._log.info("process.backing_off", process_id=proc.id, run=state.run, delay=delay)
        runner.emit(proc)
        runner.tasks.spawn(self._next_run(proc, commit, from_keeper, delay))

    async def _next_run(self, proc: Process, commit: asyncio.Future[None], from_keeper: bool,
                        delay: float) -> None:
        """Once the run's end is committed (or kept unsaved: a run's exit is no promise to a
        client), acknowledge its exit — the keeper refuses a spawn under an id whose exit it
        still holds — and only then arm the next run's timer. A keeper lost meanwhile is
        waited for (recovery replays the exit, which Exits.keeper_exit acknowledges too)."""
        try:
            await commit
        except RegistryError as exc:
            self._log.warning("process.run_end_unsaved", process_id=proc.id, error=str(exc))
        attempt = 0
        while from_keeper and proc.state is State.RUNNING:
            try:
                await self._runner.keeper.ack(proc.id)
                break
            except KeeperError as exc:
                attempt += 1
                if attempt == 1:
                    self._log.warning("process.restart_waits", process_id=proc.id, error=str(exc))
                await asyncio.sleep(min(2.0, 0.1 * attempt))
        if proc.state is State.RUNNING and proc.id not in self._timers:
            self._timers[proc.id] = self._runner.loop.call_later(delay, self._start_next, proc)

    def spawn_failed(self, proc: Process, reason: str) -> bool:
        """A run could not be spawned for the keeper's reasons (lost, or still holding the id):
        try again after the backoff, as after a failed run. False when the policy or the
        count says the record should end instead."""
        spec, state = proc.managed, proc.managed_state
        if spec is None or state is None or spec.restart.policy is Policy.NEVER:
            return False
        limit = spec.restart.max_restarts
        if limit is not None and state.restart_count >= limit:
            return False
        state.last_error = f"not started: {reason}"
        state.restarts_in_a_row += 1
        self._runner.table.apply(proc, Event.RUN_ENDED)
        self._log.warning("process.spawn_retry", process_id=proc.id, error=reason)
        self._schedule(proc, spec.restart.backoff_ms(state.restarts_in_a_row) / 1000)
        return True

    def _start_next(self, proc: Process) -> None:
        self._timers.pop(proc.id, None)
        state = proc.managed_state
        if proc.state is not State.RUNNING or state is None:
            return
        state.restart_count += 1
        self._log.info("process.restarting", process_id=proc.id, run=state.run + 1,
                       restarts=state.restart_count)
        self._runner.tasks.spawn(self._runner.spawn(proc))

    # --- requests ----------------------------------------------------------------------

    async def restart(self, proc: Process, child: Child | None, timeout: float) -> None:
        """Stop the current run and start the next at once (the backoff reset); returns once
        the next run has started, or ``timeout`` passed."""
        state = proc.managed_state
        if proc.managed is None or state is None:
            raise Conflict(f"process {proc.id} is not a managed process")
        if proc.state is not State.RUNNING:
            raise Conflict(f"process {proc.id} is {proc.state.value}")
        started: asyncio.Future[None] = self._runner.loop.create_future()
        self._started.setdefault(proc.id, []).append(started)
        timer = self._timers.pop(proc.id, None)
        if timer is not None:       # backing off: start now
            timer.cancel()
            state.restarts_in_a_row = 0
            self._start_next(proc)
        elif child is not None and not child.exited.done():
            self._end_run(proc, child, "restarted")
        try:
            await asyncio.wait_for(asyncio.shield(started), timeout)
        except TimeoutError:
            pass

    def stopping(self, proc: Process) -> None:
        """A kill or timeout ends the managed process for good: no next run."""
        timer = self._timers.pop(proc.id, None)
        if timer is not None:
            timer.cancel()
        self._forget_run(proc.id)
        if proc.managed_state is not None:
            proc.managed_state.status = Status.STOPPED
            proc.managed_state.next_restart_at = None

    def resume(self, proc: Process, child: Child | None) -> None:
        """Start-up: take up a run the keeper still holds, or re-arm a backoff."""
        state = proc.managed_state
        if state is None:
            return
        if child is not None:
            # A crash between a run's spawn and its commit leaves the status backing off:
            # the child the keeper holds is that next run.
            self.run_started(proc, child, resumed=state.status is not Status.BACKING_OFF)
            return
        due = iso_to_epoch(state.next_restart_at) or wall()
        self._timers[proc.id] = self._runner.loop.call_later(max(0.0, due - wall()),
                                                             self._start_next, proc)

    def _forget_run(self, process_id: int) -> None:
        watch = self._watches.pop(process_id, None)
        if watch is not None:
            watch.stop()
        ready = self._ready.pop(process_id, None)
        if ready is not None:
            ready.cancel()

    async def close(self) -> None:
        """At shutdown: no more runs; probes in flight killed and reaped."""
        for process_id in list(self._timers):
            self._timers.pop(process_id).cancel()
        watches = list(self._watches.values())
        for process_id in list(self._watches) + list(self._ready):
            self._forget_run(process_id)
        for watch in watches:
            await watch.aclose()

    def _note(self, process_id: int, write: asyncio.Future[Any]) -> None:
        """A runs-table write: its failure costs the history a row, nothing else."""
        self._rows[process_id] = write
        write.add_done_callback(lambda done: self._noted(process_id, done))

    def _noted(self, process_id: int, write: asyncio.Future[Any]) -> None:
        if self._rows.get(process_id) is write:
            del self._rows[process_id]
        if not write.cancelled() and write.exception() is not None:
            self._log.warning("process.run_unsaved", process_id=process_id,
                              error=str(write.exception()))

    async def rows_written(self, process_id: int) -> None:
        """Wait for the runs-table writes queued so far for a record (a read then sees them)."""
        write = self._rows.get(process_id)
        if write is not None:
            await asyncio.wait([write])


def _iso_in(seconds: float) -> str:
    stamp = time.time() + seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"
