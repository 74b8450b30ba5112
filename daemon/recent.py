"""Settled records kept in memory, so that reading one does not go to SQLite.

An idle record never changes again: it can only be deleted, and ids are never
reused. A client that starts a process and then waits on it, or polls
``GET /processes/{id}``, mostly reads records that have just settled; each
read from the registry costs a query on aiosqlite's thread and two hand-offs
between threads. So the supervisor keeps the most recently settled or read
idle records here, least recently used first out, within a count and a byte
budget (an ``env`` can be large). Only records whose idle state is committed
enter; a deletion takes its record out before the row goes.

A read from the registry that raced a deletion must not bring the deleted
record back: :meth:`generation` changes with every deletion, and a reader
offers what it read with the generation it started with (:meth:`offer`).
"""

from __future__ import annotations

import collections

from .model import Process, State

MAX_RECORDS = 1024
MAX_BYTES = 4 * 1024 * 1024
_BASE_BYTES = 1024   # the dataclass, its timestamps and small fields, roughly


def approximate_size(record: Process) -> int:
    """Roughly the bytes a record holds: a fixed part, and what a client sent."""
    return (_BASE_BYTES + sum(map(len, record.argv)) + len(record.command or "")
            + sum(len(key) + len(value) for key, value in record.env.items())
            + len(record.cwd or "") + len(record.ref or "") + len(record.error or ""))


class RecentRecords:
    """Idle records by id, least recently used evicted first. Records are shared, not
    copied: nobody may change one once it is here."""

    def __init__(self, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES) -> None:
        self._records: collections.OrderedDict[int, tuple[Process, int]] = collections.OrderedDict()
        self._bytes = 0
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._generation = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, process_id: int) -> Process | None:
        entry = self._records.get(process_id)
        if entry is None:
            return None
        self._records.move_to_end(process_id)
        return entry[0]

    def add(self, record: Process) -> None:
        """Keep a record whose idle state is committed (any other is left out)."""
        size = approximate_size(record)
        if record.state is not State.IDLE or size > self._max_bytes:
            return
        self._drop(record.id)
        self._records[record.id] = (record, size)
        self._bytes += size
        while len(self._records) > self._max_records or self._bytes > self._max_bytes:
            _, (_, evicted) = self._records.popitem(last=False)
            self._bytes -= evicted

    def offer(self, record: Process, generation: int) -> None:
        """Keep a record read from the registry, if it is idle and no deletion ran
        since the read began (the read may have seen a row that is gone now)."""
        if generation == self._generation:
            self.add(record)

    def forget(self, process_id: int) -> None:
        """Drop a record whose row is being deleted; reads begun before this are not kept.
        Call it before the deletion and again once it is committed."""
        self._generation += 1
        self._drop(process_id)

    def _drop(self, process_id: int) -> None:
        entry = self._records.pop(process_id, None)
        if entry is not None:
            self._bytes -= entry[1]
