"""Leases: a process that lives while its owner renews it (issue 20).

A start may carry ``lease`` (seconds, 1 to 86400). From its creation the record
holds ``lease_expires_at``; a renewal moves it to now + ``lease``. When it passes,
the process is stopped as a kill stops it (SIGTERM, its grace, then SIGKILL; a
queued one is canceled) and ends idle/canceled with the error "lease expired".
An agent host that dies so leaves nothing running; one that lives renews.

What renews a lease (:meth:`Leases.touch`):

* ``POST /processes/{id}/lease``; with ``seconds``, that becomes the lease's
  length (shorter or longer; it also puts a lease on a process that had none);
* a poll of the process, at its start and its end, and the whole time it waits
  (:meth:`Leases.hold`: an open poll is an owner that is there);
* an open output follow or SSE stream of the process: each round of
  ``streaming.Follow`` touches it (a WebSocket or MCP session of a process can
  call ``Supervisor.keep_alive`` likewise).

Decisions:

* **Memory first, SQLite at most once a second.** A renewal changes the record
  in memory at once; SQLite is written only when the expiry moved SAVE_STEP (1 s)
  or more since the last write, or the length changed, so a follow renewing
  every 50 ms costs one write a second, not twenty. The stored expiry lags the
  real one by less than SAVE_STEP. ``GET`` of a live record reads SQLite, so it
  may show the expiry that much early; the lease route answers with memory's.
  A renewal's write is a fact, like an exit: if it fails, the record is kept
  unsaved and written again (unsaved.py), and the renewal is not refused. A new
  length (``seconds``) is the caller's intent instead: committed before the
  answer, or a 503 and the lease as it was.
* **One timer per lease, not one per renewal.** When the timer fires it looks
  at the expiry then, and sleeps again for what is left; only a renewal that
  shortens the lease moves the timer.
* **A lapse is a kill.** It goes through ``Terminating.stop`` like a client's
  kill, with ``error = "lease expired"`` written alongside. If its stop cannot
  be committed (storage failing) it is undone as any kill is: the process keeps
  running, the error is cleared, and the lapse is tried again after RETRY.
  A process already being stopped (terminating) is looked at again after RETRY:
  if that stop was undone, the lease still holds it.
* **Only a live record can be renewed:** a queued or running one; anything else
  is a 409 (there is nothing to keep alive), and so is a renewal without
  ``seconds`` of a process that has no lease.
* **A daemon restart re-arms each lease from the stored expiry**, but never
  earlier than start-up + min(lease, RESTART_GRACE): while no daemon answered,
  its owner could not renew, and one that is still there renews within that;
  one that is gone has its process stopped at most RESTART_GRACE (30 s) after
  start-up. A shutdown (either mode) cancels the timers; with ``shutdown =
  "detach"`` the expiry stays stored for the next daemon.
* When the record ends its timer goes; ``lease`` and ``leaseExpiresAt`` stay on
  the record, as history.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import ApiError, Conflict
from ..model import STOPPABLE, Process, State, iso_to_epoch
from ..registry import RegistryError, StorageError

if TYPE_CHECKING:
    from .running import Runner

LEASE_EXPIRED = "lease expired"
SAVE_STEP = 1.0          # seconds the expiry moves before a renewal is written to SQLite
RESTART_GRACE = 30.0     # the least a restarted daemon gives a lease to be renewed (see above)
RETRY = 1.0              # a lapse whose stop could not be committed is tried again after this
_EARLY = 0.002           # a timer firing this much before the expiry counts as on time


def iso_at(epoch: float) -> str:
    """A unix time as ISO-8601 UTC with milliseconds and a ``Z`` (as ``model.now_iso``)."""
    second = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((epoch - second) * 1000):03d}Z"


def lease_expiry(seconds: float) -> str:
    """When a lease of ``seconds`` taken now expires."""
    return iso_at(time.time() + seconds)


class Leases:
    """Every live lease's timer and expiry, by record id."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._table = runner.table
        self._log = runner.log
        self._loop = runner.loop
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._due: dict[int, float] = {}       # id -> the unix time its timer fires at
        self._expiry: dict[int, float] = {}    # id -> the unix time it lapses (the latest renewal)
        self._saved: dict[int, float] = {}     # id -> the expiry last written to SQLite
        self._held: collections.Counter[int] = collections.Counter()   # id -> open polls
        self._closed = False

    # --- arming ----------------------------------------------------------------------

    def arm(self, process_id: int, *, restarted_at: float | None = None) -> None:
        """Watch a live record's lease (after its creation; at start-up with ``restarted_at``)."""
        proc = self._table.get(process_id)
        if self._closed or proc is None or proc.lease is None or process_id in self._expiry \
                or proc.state not in STOPPABLE:
            return
        stored = iso_to_epoch(proc.lease_expires_at)
        expiry = stored if stored is not None else time.time() + proc.lease
        if restarted_at is not None:
            expiry = max(expiry, restarted_at + min(proc.lease, RESTART_GRACE))
        self._expiry[process_id] = expiry
        if stored is None or expiry != stored:
            self._save(proc, expiry)
        else:
            self._saved[process_id] = expiry
        self._schedule(process_id, expiry)

    def resume(self) -> None:
        """At start-up: re-arm the lease of every live record (see the module doc)."""
        now = time.time()
        for proc in self._table.records():
            self.arm(proc.id, restarted_at=now)

    def close(self) -> None:
        """The daemon is shutting down: no lease lapses any more."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def observe(self, snapshot: Process) -> None:
        """A listener of every committed change: a record that ended has no lease to watch."""
        if snapshot.state is State.IDLE and snapshot.id in self._expiry:
            self._drop(snapshot.id)

    # --- renewing --------------------------------------------------------------------

    async def renew(self, process_id: int, seconds: float | None = None) -> Process:
        """Renew a live record's lease (``seconds``: its new length); the record as memory has it.
        Conflict if it is not queued or running, or has no lease and no ``seconds`` were given.

        A new length is the caller's intent: it is committed before the answer, and if it
        cannot be (StorageError, a 503) the lease is as it was.
        """
        proc = self._table.get(process_id)
        if proc is None or proc.state not in STOPPABLE:
            state = proc.state.value if proc is not None else "idle"
            raise Conflict(f"process {process_id} is {state}: there is nothing to keep alive")
        if seconds is None and proc.lease is None:
            raise Conflict(f"process {process_id} has no lease; give 'seconds' to take one")
        if seconds is None or seconds == proc.lease:
            self._extend(proc)
            return proc.copy()
        before = (proc.lease, proc.lease_expires_at, self._expiry.get(process_id),
                  self._saved.get(process_id))
        proc.lease = seconds
        commit = self._extend(proc, save=True)
        assert commit is not None
        try:
            await asyncio.shield(commit)
        except RegistryError as exc:
            self._undo(proc, *before)
            if isinstance(exc, StorageError):
                raise StorageError(f"{exc.message}; the lease of process {process_id} "
                                   "was not changed") from None
            raise
        return proc.copy()

    def _undo(self, proc: Process, lease: float | None, expires_at: str | None,
              expiry: float | None, saved: float | None) -> None:
        """A new length could not be committed: the lease is as it was (and is written so)."""
        proc.lease, proc.lease_expires_at = lease, expires_at
        self._runner.unsaved.mark(proc)   # whatever raced the failure is written over
        if expiry is None:
            self._drop(proc.id)
            return
        self._expiry[proc.id] = expiry
        if saved is not None:
            self._saved[proc.id] = saved
        self._schedule(proc.id, min(expiry, self._due.get(proc.id, expiry)))

    def touch(self, process_id: int) -> None:
        """Renew the lease if the record has one (a poll, an open stream); never raises."""
        proc = self._table.get(process_id)
        if not self._closed and proc is not None and process_id in self._expiry \
                and proc.state in STOPPABLE:
            self._extend(proc)

    @contextlib.contextmanager
    def hold(self, process_id: int) -> Iterator[None]:
        """Renew the lease for as long as the block runs (an open poll), and at both ends."""
        self.touch(process_id)
        self._held[process_id] += 1
        try:
            yield
        finally:
            self._held[process_id] -= 1
            if self._held[process_id] <= 0:
                del self._held[process_id]
            self.touch(process_id)

    def _extend(self, proc: Process, save: bool = False) -> asyncio.Future[None] | None:
        """Move the expiry to now + lease; the write's future, if it was written."""
        assert proc.lease is not None
        expiry = time.time() + proc.lease
        self._expiry[proc.id] = expiry
        proc.lease_expires_at = iso_at(expiry)
        commit = None
        if save or expiry - self._saved.get(proc.id, 0.0) >= SAVE_STEP:
            commit = self._save(proc, expiry)
        due = self._due.get(proc.id)
        if due is None or expiry < due:   # a shorter lease (or a first one): the timer moves
            self._schedule(proc.id, expiry)
        return commit

    def _save(self, proc: Process, expiry: float) -> asyncio.Future[None]:
        self._saved[proc.id] = expiry
        proc.lease_expires_at = iso_at(expiry)
        return self._runner.write(proc, lease=proc.lease, lease_expires_at=proc.lease_expires_at)

    # --- lapsing ---------------------------------------------------------------------

    def _schedule(self, process_id: int, when: float) -> None:
        if self._closed:
            return
        old = self._timers.pop(process_id, None)
        if old is not None:
            old.cancel()
        self._due[process_id] = when
        self._timers[process_id] = self._loop.call_later(max(0.0, when - time.time()),
                                                         self._fire, process_id)

    def _fire(self, process_id: int) -> None:
        self._timers.pop(process_id, None)
        self._due.pop(process_id, None)
        proc = self._table.get(process_id)
        if proc is None or self._runner.closing:
            self._drop(process_id)
            return
        if proc.state not in STOPPABLE or process_id in self._runner.abandoned:
            self._schedule(process_id, time.time() + RETRY)   # being stopped: look again
            return
        if process_id in self._held:
            self._extend(proc)
            return
        expiry = self._expiry[process_id]
        if expiry - time.time() > _EARLY:
            self._schedule(process_id, expiry)   # renewed since the timer was set
            return
        self._runner.tasks.spawn(self._lapse(proc))

    async def _lapse(self, proc: Process) -> None:
        runner = self._runner
        if runner.closing or proc.id not in self._expiry:
            return
        if proc.state not in STOPPABLE or proc.id in runner.abandoned:
            self._schedule(proc.id, time.time() + RETRY)   # being stopped meanwhile: look again
            return
        expiry = self._expiry.get(proc.id)
        if expiry is None or expiry - time.time() > _EARLY:
            if expiry is not None:
                self._schedule(proc.id, expiry)   # renewed meanwhile
            return
        self._log.info("process.lease_expired", process_id=proc.id, lease=proc.lease,
                       state=proc.state.value)
        proc.error = LEASE_EXPIRED
        runner.write(proc, error=proc.error)   # queued with the stop's write: one commit
        try:
            await runner.terminating.stop(proc, None, signal.SIGTERM, True)
        except ApiError as exc:   # not stopped (its stop was undone): it keeps running
            if proc.state in STOPPABLE and proc.error == LEASE_EXPIRED:
                proc.error = None
                runner.write(proc, error=None)
            self._log.warning("process.lease_stop_failed", process_id=proc.id, error=exc.message)
            if proc.id in self._expiry:
                self._schedule(proc.id, time.time() + RETRY)

    def _drop(self, process_id: int) -> None:
        timer = self._timers.pop(process_id, None)
        if timer is not None:
            timer.cancel()
        for known in (self._due, self._expiry, self._saved):
            known.pop(process_id, None)
