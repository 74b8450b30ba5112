"""Records whose latest state is in memory only, written again until SQLite has it.

When storage fails (disk full, read-only, I/O error, locked), some facts still
happen: a child exits, a spawn fails, a stop ends. The supervisor keeps them in
memory and marks the record *unsaved* here (issue 15). From then on:

* reads that go through the supervisor (``get``, ``wait``, the by-pid lookups,
  ``list``) serve the in-memory record: :meth:`get`, :meth:`newest_with_pid`,
  :meth:`overlay`;
* a background task writes the full mutable state of every unsaved record
  (state, exit, pid, stop and truncation columns — never the creation columns)
  again, with backoff: RETRY_FIRST, doubling to RETRY_MAX. Each failed attempt
  logs ``registry.retry``; the attempt that commits them logs
  ``registry.recovered``.

A record is clean only when a write queued *after its last failure* commits:
each failure (and each in-memory undo of a refused transition) bumps the record's
generation, and a rewrite clears the record only if the generation it was queued
with is still the current one. So a rewrite that raced a newer failure, or an
undo, is followed by another one, and SQLite ends with what memory holds.

A rewrite that SQLite refuses for its values (WriteRejected) cannot succeed by
retrying: it is logged as ``registry.unsavable`` and dropped. The supervisor
escapes the text it writes (errors), so this is not expected to happen.

Every transition's write goes through :meth:`UnsavedRecords.write`, which queues
it and marks the record unsaved if it fails: no write's failure goes unnoticed,
and a caller that must refuse or undo (a kill, an admission, a pid) awaits the
returned future to see the failure too.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

from ..model import Process
from ..registry import Registry, RegistryError, WriteRejected

RETRY_FIRST = 0.1     # seconds before the first rewrite
RETRY_MAX = 2.0       # the backoff stops growing here: a recovered disk is noticed within it

# The columns a record's life changes after its insert: what a rewrite writes.
MUTABLE_COLUMNS = (
    "state", "exit_state", "error", "started_at", "completed_at", "pid", "pid_start_time",
    "boot_id", "exit_code", "exit_signal", "stop_reason", "stop_requested_at", "stop_grace",
    "stop_signal", "stdout_dropped", "stderr_dropped", "lease", "lease_expires_at",
    "tty", "managed_state",
)


def mutable_columns(proc: Process) -> dict[str, Any]:
    return {name: getattr(proc, name) for name in MUTABLE_COLUMNS}


class UnsavedRecords:
    def __init__(self, registry: Registry, log: Any) -> None:
        self._registry = registry
        self._log = log
        self._records: dict[int, Process] = {}     # id -> the live object (or the final record)
        self._generation: dict[int, int] = {}
        self._counter = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, process_id: object) -> bool:
        return process_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def ids(self) -> list[int]:
        return sorted(self._records)

    def write(self, proc: Process, **fields: Any) -> asyncio.Future[None]:
        """Queue a write of ``proc``'s fields; awaiting it raises if it failed.

        A failed write leaves memory ahead of SQLite: the record is marked unsaved
        and written again until it commits. Callers that must refuse or undo (a
        kill, an admission, a pid) also see the failure.
        """
        try:
            future = self._registry.update(proc.id, **fields)
        except RegistryError as exc:  # the registry is closed
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        future.add_done_callback(functools.partial(self._written, proc))
        return future

    def _written(self, proc: Process, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.mark(proc, future.exception())

    def mark(self, proc: Process, error: BaseException | None = None) -> None:
        """Memory is (or may be) ahead of SQLite for ``proc``: write it again until it commits.

        ``proc`` is kept by reference: a live record's later changes are written too.
        """
        if error is not None and proc.id not in self._records:
            self._log.warning("registry.unsaved", process_id=proc.id, state=proc.state.value,
                              error=str(error))
        self._records[proc.id] = proc
        self._generation[proc.id] = next(self._counter)
        if (self._task is None or self._task.done()) and not self._registry.closed:
            self._task = asyncio.get_running_loop().create_task(self._retry())

    def forget(self, process_id: int) -> None:
        """The row is gone (deleted): nothing to save any more."""
        self._records.pop(process_id, None)
        self._generation.pop(process_id, None)

    def get(self, process_id: int) -> Process | None:
        """A snapshot of the unsaved record, or None if SQLite has its latest state."""
        proc = self._records.get(process_id)
        return None if proc is None else proc.copy()

    def newest_with_pid(self, pid: int) -> Process | None:
        found = [p for p in self._records.values() if p.pid == pid]
        return max(found, key=lambda p: p.id).copy() if found else None

    def overlay(self, records: list[Process]) -> list[Process]:
        """Rows read from SQLite, with unsaved records replaced by their in-memory state."""
        if not self._records:
            return records
        return [self._records[r.id].copy() if r.id in self._records else r for r in records]

    async def _retry(self) -> None:
        delay, attempt = RETRY_FIRST, 0
        while self._records and not self._registry.closed:
            await asyncio.sleep(delay)
            attempt += 1
            saved, error = await self.flush()
            if error is None:
                self._log.info("registry.recovered", records=saved, attempts=attempt)
                delay, attempt = RETRY_FIRST, 0
            else:
                delay = min(delay * 2, RETRY_MAX)
                self._log.warning("registry.retry", attempt=attempt, unsaved=len(self._records),
                                  retry_in=delay, error=str(error))

    async def flush(self) -> tuple[int, BaseException | None]:
        """Write every unsaved record once: (how many were saved, the storage error if any)."""
        queued = []
        try:
            for process_id, proc in list(self._records.items()):
                write = self._registry.update(process_id, **mutable_columns(proc))
                queued.append((process_id, self._generation[process_id], write))
        except Exception as exc:  # the registry is closed: nothing more can be written
            for _, _, write in queued:
                write.cancel()
            return 0, exc
        results = await asyncio.gather(*(write for _, _, write in queued), return_exceptions=True)
        saved, failure = 0, None
        for (process_id, generation, _), result in zip(queued, results, strict=True):
            if isinstance(result, WriteRejected):
                self._log.error("registry.unsavable", process_id=process_id, error=result.message)
            elif isinstance(result, BaseException):
                failure = result
                continue
            if self._generation.get(process_id) == generation:
                self.forget(process_id)
                saved += 1
        return saved, failure

    async def close(self) -> None:
        """Stop retrying; make one last attempt and say what could not be saved."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._records and not self._registry.closed:
            saved, error = await self.flush()
            if error is not None:
                self._log.error("registry.unsaved_at_exit", process_ids=self.ids(), error=str(error))
            elif saved:
                self._log.info("registry.recovered", records=saved, attempts=1)
