"""The process registry: the only place that speaks SQL.

Durability rule: a write returns only after its transaction has committed, so a
caller that got a 2xx can rely on the row surviving a crash of the daemon.

* writer.py: writes, group-committed by one thread of our own;
* failures.py: the registry's errors; which failures fail one write, which the batch;
* schema.py: the columns (the fields of ``Process``), rows as records, migrations.

Reads use aiosqlite on a second connection, so they never see a batch that is
still open (WAL lets them run beside the writer) and never block the loop.
Pragmas are per connection and set on every connect: WAL, synchronous=FULL
(a commit survives power loss, not only a crash), foreign_keys, busy_timeout.

Every write returns a future that settles once its batch has committed (or failed).
Callers await it, or (the supervisor's ``UnsavedRecords.write``) attach a callback that keeps the
record unsaved and logs ``registry.unsaved`` when it fails: no write's failure is lost.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from ..model import ExitState, Process, State
from .failures import (
    DuplicateKey,
    RegistryError,
    StorageError,
    UnknownColumn,
    WriteRejected,
    is_storage_failure,
    printable,
)
from .schema import (
    MIGRATIONS_DIRS,
    SELECT,
    check_schema,
    check_writable,
    known_migrations,
    migrate,
    migrations_dir,
    row_to_process,
    to_column,
    update_sql,
)
from .writer import PRAGMAS, WriterThread

__all__ = [
    "MIGRATIONS_DIRS", "DuplicateKey", "Registry", "RegistryError", "StorageError", "UnknownColumn",
    "WriteRejected", "is_storage_failure", "known_migrations", "migrations_dir",
]


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await conn.execute_fetchall(f"PRAGMA {pragma}")
    return conn


class Registry:
    """Async access to the processes table. Create with :meth:`open`."""

    def __init__(self, path: Path, writer: WriterThread, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._closed = False

    @classmethod
    async def open(cls, path: Path, migrations: Path | None = None) -> Registry:
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = await _connect(path)
        try:
            await migrate(reader, known_migrations(migrations))
            await check_schema(reader)
            writer = await asyncio.to_thread(WriterThread, path, asyncio.get_running_loop())
        except BaseException:
            await reader.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Commit what is queued, then close both connections."""
        if self._closed:
            return
        self._closed = True
        await self._writer.close()  # the last batches are settled before this returns
        await self._reader.close()

    # --- writes (group-committed) ---

    @property
    def closed(self) -> bool:
        return self._closed

    def _enqueue(self, sql: str, params: tuple[Any, ...], *, insert: bool = False) -> asyncio.Future[Any]:
        """Queue a write now (order is call order); the future resolves once it is committed."""
        if self._closed:
            raise StorageError("storage is unavailable: the registry is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writer.put((sql, params, insert, future))
        return future

    # Writes are plain methods that queue at call time and return an awaitable, so
    # the supervisor's in-memory transition and its write are ordered together.

    def insert(self, fields: dict[str, Any]) -> Awaitable[int]:
        """Queue a new process row; awaits to its id. DuplicateKey on a reused Idempotency-Key.

        ``fields`` are columns (``Process.columns()``); ``id`` may be there only as None.
        """
        if fields.get("id") is not None:
            raise UnknownColumn("a new row's id is assigned by SQLite; give none")
        keys = [k for k in fields if k != "id"]
        check_writable(keys)
        sql = f"INSERT INTO processes ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})"
        future = self._enqueue(sql, tuple(to_column(k, fields[k]) for k in keys), insert=True)
        return _translate_duplicate(future, fields.get("idempotency_key"))

    def update(self, process_id: int, **fields: Any) -> asyncio.Future[None]:
        params = tuple(to_column(k, v) for k, v in fields.items()) + (process_id,)
        return self._enqueue(update_sql(tuple(fields)), params)

    def delete(self, process_id: int) -> asyncio.Future[None]:
        self._enqueue("DELETE FROM runs WHERE process_id = ?", (process_id,))
        return self._enqueue("DELETE FROM processes WHERE id = ?", (process_id,))

    def run_started(self, process_id: int, run: int, pid: int | None,
                    started_at: str) -> asyncio.Future[None]:
        """A managed process's run began (or began again under the same number after a crash)."""
        return self._enqueue("INSERT OR REPLACE INTO runs (process_id, run, pid, started_at) "
                             "VALUES (?, ?, ?, ?)", (process_id, run, pid, started_at))

    def run_ended(self, process_id: int, run: int, ended_at: str, exit_code: int | None,
                  exit_signal: str | None, reason: str) -> asyncio.Future[None]:
        return self._enqueue("UPDATE runs SET ended_at = ?, exit_code = ?, exit_signal = ?, reason = ? "
                             "WHERE process_id = ? AND run = ? AND ended_at IS NULL",
                             (ended_at, exit_code, exit_signal, reason, process_id, run))

    def set_meta(self, key: str, value: str) -> asyncio.Future[None]:
        return self._enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- reads ---

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> Iterable[Any]:
        try:
            return await self._reader.execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StorageError(f"storage is failing: the registry could not be read "
                               f"({printable(str(exc))})") from exc

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Process]:
        return [row_to_process(row) for row in await self._read(sql, params)]

    async def get(self, process_id: int) -> Process | None:
        rows = await self._fetch(f"{SELECT} WHERE id = ?", (process_id,))
        return rows[0] if rows else None

    async def get_many(self, ids: Iterable[int]) -> list[Process]:
        """The records among ``ids`` that exist, in one query whatever their number (the
        ids travel as one JSON array parameter: no limit on bound variables)."""
        return await self._fetch(f"{SELECT} WHERE id IN (SELECT value FROM json_each(?))",
                                 (json.dumps(list(ids)),))

    async def by_idempotency_key(self, key: str) -> Process | None:
        rows = await self._fetch(f"{SELECT} WHERE idempotency_key = ?", (key,))
        return rows[0] if rows else None

    async def newest_by_pid(self, pid: int) -> Process | None:
        """The newest record that ran as ``pid``: its current pid, or any of its runs'."""
        rows = await self._fetch(f"{SELECT} WHERE pid = ? OR id IN "
                                 "(SELECT process_id FROM runs WHERE pid = ?) ORDER BY id DESC LIMIT 1",
                                 (pid, pid))
        return rows[0] if rows else None

    async def newest_by_name(self, name: str) -> Process | None:
        rows = await self._fetch(f"{SELECT} WHERE name = ? ORDER BY id DESC LIMIT 1", (name,))
        return rows[0] if rows else None

    async def runs(self, process_id: int) -> list[dict[str, Any]]:
        """A managed process's runs, oldest first."""
        rows = await self._read("SELECT run, pid, started_at, ended_at, exit_code, exit_signal, reason "
                                "FROM runs WHERE process_id = ? ORDER BY run", (process_id,))
        keys = ("run", "pid", "started_at", "ended_at", "exit_code", "exit_signal", "reason")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def in_states(self, states: Iterable[State]) -> list[Process]:
        values = [s.value for s in states]
        marks = ", ".join("?" * len(values))
        return await self._fetch(f"{SELECT} WHERE state IN ({marks}) ORDER BY id", values)

    async def list(
        self,
        *,
        state: State | None = None,
        exit_state: ExitState | None = None,
        ref: str | None = None,
        name: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Process]:
        """Newest first. ``before_id`` is the cursor: only ids below it."""
        clauses, params = [], []
        for column, value in (("state", state), ("exit_state", exit_state), ("ref", ref),
                              ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value.value if hasattr(value, "value") else value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._fetch(f"{SELECT}{where} ORDER BY id DESC LIMIT ?", [*params, limit])

    async def get_meta(self, key: str) -> str | None:
        rows = list(await self._read("SELECT value FROM meta WHERE key = ?", (key,)))
        return rows[0][0] if rows else None

    async def count(self) -> int:
        rows = list(await self._read("SELECT COUNT(*) FROM processes"))
        return int(rows[0][0])


async def _translate_duplicate(future: Awaitable[int], key: str | None) -> int:
    try:
        return await future
    except WriteRejected as exc:
        if isinstance(exc.cause, sqlite3.IntegrityError) and "idempotency_key" in str(exc.cause):
            raise DuplicateKey(key) from None
        raise
