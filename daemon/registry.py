"""The process registry: the only module that speaks SQL.

Durability rule: a write returns only after its transaction has committed, so a
caller that got a 2xx can rely on the row surviving a crash of the daemon.

Writes go to one writer thread that commits whatever has queued up in a
single transaction (group commit): under a burst of 200 spawns the daemon pays
for a handful of commits instead of 400, while each caller still waits for its
own commit. The thread takes every queued write whenever it is free (it never
waits on the event loop between batches), and a batch's outcome comes back in
one ``call_soon_threadsafe`` that settles every caller's future. That thread is our own (:class:`_WriterThread`)
rather than aiosqlite's: a commit is on the critical path of every transition
(a kill's 2xx waits for it), and aiosqlite's call-and-await costs a task start
and two more turns of the event loop per commit, about 0.2 ms of a 2 ms kill.
Reads use aiosqlite on a second connection, so they never see a batch that is
still open (WAL lets them run beside the writer) and never block the loop.

Pragmas are per connection and set on every connect: WAL, synchronous=FULL
(a commit survives power loss, not only a crash), foreign_keys, busy_timeout.
Migrations in migrations/NNNN_name.sql are applied in order at open, each in
one transaction together with the row that records it; a database that has
migrations this code does not know refuses to open.

Failures are isolated per statement (issue 15). A batch holds the writes of many
requests, so one write must never cost the others theirs:

* A **statement-level** failure fails only the write it belongs to, and the rest
  of the batch commits. That is any error raised while one statement is bound or
  run that leaves the transaction open: a value the driver cannot bind (a lone
  surrogate: UnicodeEncodeError; an int beyond 64 bits: OverflowError;
  sqlite3.InterfaceError), a constraint (IntegrityError), a value too big
  (DataError), a bad statement. No SAVEPOINT is needed: SQLite makes every
  statement atomic (a failing one is undone alone, its transaction stays open),
  and a bind error fails before anything runs. The caller gets
  :class:`WriteRejected`, a 400 (the value came with its request), or
  :class:`DuplicateKey` for a reused Idempotency-Key.
* A **storage** failure fails the batch: SQLITE_FULL (disk or quota full),
  SQLITE_IOERR, SQLITE_READONLY, SQLITE_BUSY/LOCKED (locked beyond
  busy_timeout), SQLITE_CANTOPEN, SQLITE_CORRUPT/NOTADB, SQLITE_NOMEM, or any
  error after which SQLite has already rolled the transaction back, or a failing
  BEGIN or COMMIT. Nothing of the batch is durable, so every caller gets
  :class:`StorageError`, an ``Unavailable`` (HTTP 503) whose message says the
  storage is failing. What to do about it (roll back, keep in memory, retry) is
  the supervisor's decision: see its module docstring.
* A failing read is a :class:`StorageError` too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import re
import sqlite3
import threading
from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .errors import BadRequest, Unavailable
from .model import ExitState, Process, State, StopReason, now_iso

_PACKAGE_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIRS = (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")

_COLUMNS = (
    "id", "ref", "state", "exit_state", "error", "created_at", "started_at", "completed_at",
    "argv", "command", "env", "cwd", "timeout", "grace", "stdin", "pid", "pid_start_time",
    "boot_id", "exit_code", "exit_signal", "stop_reason", "stop_requested_at", "stop_grace",
    "stop_signal", "idempotency_key", "request_hash", "stdout_dropped", "stderr_dropped",
    "stdout_mode", "stderr_mode",
)
_WRITABLE = frozenset(_COLUMNS) - {"id"}
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM processes"


class RegistryError(Exception):
    """The registry cannot be opened or used (schema too new, corrupt file...)."""


class StorageError(RegistryError, Unavailable):
    """The database could not commit (or read): disk full, read-only, I/O error, locked.

    An ``Unavailable``: the HTTP layer renders it as 503 with its message.
    """


class WriteRejected(RegistryError, BadRequest):
    """One statement refused its values (a lone surrogate, a 65-bit int...); the
    other writes of its batch were committed. A 400: the values came with a request."""

    def __init__(self, cause: BaseException) -> None:
        detail = _printable(f"{cause}" or type(cause).__name__)
        super().__init__(f"a value of this request cannot be stored: {detail}")
        self.cause = cause


class DuplicateKey(Exception):
    """An insert collided with an existing Idempotency-Key."""


# SQLite's primary result codes that mean the storage itself is failing: they fail the
# whole batch (see the module docstring). Extended codes are folded to these (& 0xff).
_STORAGE_CODES = frozenset({
    3,    # SQLITE_PERM
    5,    # SQLITE_BUSY (locked beyond busy_timeout)
    6,    # SQLITE_LOCKED
    7,    # SQLITE_NOMEM
    8,    # SQLITE_READONLY
    10,   # SQLITE_IOERR
    11,   # SQLITE_CORRUPT
    13,   # SQLITE_FULL
    14,   # SQLITE_CANTOPEN
    15,   # SQLITE_PROTOCOL
    22,   # SQLITE_NOLFS
    26,   # SQLITE_NOTADB
})


def _printable(text: str) -> str:
    """``text`` with whatever UTF-8 cannot encode (lone surrogates) escaped: safe to send."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by sqlite3) says the storage is failing, not one statement."""
    if isinstance(exc, MemoryError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES


def migrations_dir() -> Path:
    for candidate in MIGRATIONS_DIRS:
        if candidate.is_dir():
            return candidate
    raise RegistryError("no migrations directory found beside the daemon package")


def known_migrations(directory: Path | None = None) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration file, in order."""
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name, path.read_text()))
    return found


def _row_to_process(row: Sequence[Any]) -> Process:
    data = dict(zip(_COLUMNS, row))
    data["state"] = State(data["state"])
    data["exit_state"] = ExitState(data["exit_state"]) if data["exit_state"] else None
    data["stop_reason"] = StopReason(data["stop_reason"]) if data["stop_reason"] else None
    data["argv"] = json.loads(data["argv"])
    data["env"] = json.loads(data["env"])
    return Process(**data)


def _to_column(key: str, value: Any) -> Any:
    if key in ("argv", "env"):
        return json.dumps(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


_PRAGMAS = ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000")


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _PRAGMAS:
        await conn.execute_fetchall(f"PRAGMA {pragma}")
    return conn


_Write = tuple[str, tuple[Any, ...], bool, "asyncio.Future[Any]"]   # sql, params, insert, caller


def _settle(batch: list[_Write], results: list[tuple[Any, BaseException | None]] | None,
            error: BaseException | None) -> None:
    """On the loop: a batch is done; resolve each caller's future."""
    if results is None:  # the whole batch failed: nobody's write is durable
        message = f"storage is failing: the registry could not commit ({_printable(str(error))})"
        for _, _, _, future in batch:
            if not future.done():
                future.set_exception(StorageError(message))
        return
    for (_, _, _, future), (value, failure) in zip(batch, results):
        if future.done():
            continue
        if failure is not None:
            future.set_exception(WriteRejected(failure))
        else:
            future.set_result(value)


class _WriterThread:
    """The registry's write connection, alone on its own thread.

    :meth:`put` queues one write without awaiting anything; the writes of one
    turn of the event loop are handed over together. Whenever the thread
    is free it takes *every* write queued so far and commits them as one
    transaction, so it never waits on the event loop between batches; each
    batch's outcome comes back in one ``call_soon_threadsafe(settle, ...)``.
    The callers' futures only travel through the thread: they are touched on
    the loop alone.
    """

    _STOP = object()

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()   # lists of writes
        self._pending: list[_Write] = []                               # this turn's writes
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            self._conn.execute(f"PRAGMA {pragma}")
        self._thread = threading.Thread(target=self._run, name="stablehand-registry-writer",
                                        daemon=True)
        self._thread.start()

    def put(self, write: _Write) -> None:
        """Queue a write; the writes of one turn of the loop reach the thread together.

        Waking the thread costs the loop a futex call and often a context switch
        (on two cores the woken thread lands on the loop's). Handing over once per
        turn instead of once per write pays that once for every write of a turn.
        """
        if not self._pending:
            self._loop.call_soon(self._hand_over)
        self._pending.append(write)

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, []
        self._writes.put(pending)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            handed = [self._writes.get()]
            while True:
                try:
                    handed.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            if handed[-1] is self._STOP:
                stopping = True
                handed.pop()
            batch = [write for writes in handed for write in writes]
            if batch:
                self._commit(batch)
        self._conn.close()

    def _commit(self, batch: list[_Write]) -> None:
        results: list[tuple[Any, BaseException | None]] | None = None
        error: BaseException | None = None
        try:
            results = _apply_batch(self._conn, [(sql, params, insert) for sql, params, insert, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - reported to every caller of the batch
            error = exc
        try:
            self._loop.call_soon_threadsafe(_settle, batch, results, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    async def close(self) -> None:
        """Commit what is queued, then stop and close the connection."""
        if self._pending:
            self._hand_over()
        self._writes.put(self._STOP)
        await asyncio.to_thread(self._thread.join)


class Registry:
    """Async access to the processes table. Create with :meth:`open`."""

    def __init__(self, path: Path, writer: _WriterThread, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._closed = False

    @classmethod
    async def open(cls, path: Path, migrations: Path | None = None) -> Registry:
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = await _connect(path)
        try:
            await _migrate(reader, known_migrations(migrations))
            writer = await asyncio.to_thread(_WriterThread, path, asyncio.get_running_loop())
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
        """Queue a new process row; awaits to its id. DuplicateKey on a reused Idempotency-Key."""
        keys = [k for k in fields if k in _WRITABLE]
        sql = f"INSERT INTO processes ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})"
        future = self._enqueue(sql, tuple(_to_column(k, fields[k]) for k in keys), insert=True)
        return _translate_duplicate(future, fields.get("idempotency_key"))

    def update(self, process_id: int, **fields: Any) -> asyncio.Future[None]:
        params = tuple(_to_column(k, v) for k, v in fields.items()) + (process_id,)
        return self._enqueue(_update_sql(tuple(fields)), params)

    def delete(self, process_id: int) -> asyncio.Future[None]:
        return self._enqueue("DELETE FROM processes WHERE id = ?", (process_id,))

    def set_meta(self, key: str, value: str) -> asyncio.Future[None]:
        return self._enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- reads ---

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> Iterable[Any]:
        try:
            return await self._reader.execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StorageError(f"storage is failing: the registry could not be read "
                               f"({_printable(str(exc))})") from exc

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Process]:
        return [_row_to_process(row) for row in await self._read(sql, params)]

    async def get(self, process_id: int) -> Process | None:
        rows = await self._fetch(f"{_SELECT} WHERE id = ?", (process_id,))
        return rows[0] if rows else None

    async def by_idempotency_key(self, key: str) -> Process | None:
        rows = await self._fetch(f"{_SELECT} WHERE idempotency_key = ?", (key,))
        return rows[0] if rows else None

    async def newest_by_pid(self, pid: int) -> Process | None:
        rows = await self._fetch(f"{_SELECT} WHERE pid = ? ORDER BY id DESC LIMIT 1", (pid,))
        return rows[0] if rows else None

    async def in_states(self, states: Iterable[State]) -> list[Process]:
        states = [s.value for s in states]
        marks = ", ".join("?" * len(states))
        return await self._fetch(f"{_SELECT} WHERE state IN ({marks}) ORDER BY id", states)

    async def list(
        self,
        *,
        state: State | None = None,
        exit_state: ExitState | None = None,
        ref: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Process]:
        """Newest first. ``before_id`` is the cursor: only ids below it."""
        clauses, params = [], []
        for column, value in (("state", state), ("exit_state", exit_state), ("ref", ref)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value.value if hasattr(value, "value") else value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._fetch(f"{_SELECT}{where} ORDER BY id DESC LIMIT ?", [*params, limit])

    async def get_meta(self, key: str) -> str | None:
        rows = list(await self._read("SELECT value FROM meta WHERE key = ?", (key,)))
        return rows[0][0] if rows else None

    async def count(self) -> int:
        rows = list(await self._read("SELECT COUNT(*) FROM processes"))
        return int(rows[0][0])


@functools.lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...]) -> str:
    """UPDATE for a set of columns (the supervisor uses a handful of sets, over and over)."""
    unknown = set(columns) - _WRITABLE
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    return f"UPDATE processes SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?"


def _apply_batch(conn: sqlite3.Connection,
                 statements: list[tuple[str, tuple[Any, ...], bool]]) -> list[tuple[Any, BaseException | None]]:
    """Run on the connection's thread: one transaction for a batch of writes.

    A statement-level failure fails only its own statement (SQLite undoes just
    that statement; a bind error runs nothing) and is returned in its slot; a
    storage failure, or any error after which the transaction is gone, rolls
    the whole batch back and is raised (module docstring).
    """
    results: list[tuple[Any, BaseException | None]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params, insert in statements:
            try:
                cursor = conn.execute(sql, params)
            except Exception as exc:
                if is_storage_failure(exc) or not conn.in_transaction:
                    raise
                results.append((None, exc))
                continue
            results.append((cursor.lastrowid if insert else None, None))
        conn.execute("COMMIT")
    except BaseException:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolled back already (or cannot): nothing of the batch is durable
        raise
    return results


async def _translate_duplicate(future: Awaitable[int], key: str | None) -> int:
    try:
        return await future
    except WriteRejected as exc:
        if isinstance(exc.cause, sqlite3.IntegrityError) and "idempotency_key" in str(exc.cause):
            raise DuplicateKey(key) from None
        raise


async def _migrate(conn: aiosqlite.Connection, migrations: list[tuple[int, str, str]]) -> None:
    await conn.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in await conn.execute_fetchall("SELECT version FROM schema_migrations")}
    newest_known = max((v for v, _, _ in migrations), default=0)
    if applied and max(applied) > newest_known:
        raise RegistryError(
            f"the database is at schema version {max(applied)}, newer than this Stablehand "
            f"(which knows up to {newest_known}); upgrade Stablehand or use another --state-dir")
    for version, name, sql in migrations:
        if version in applied:
            continue
        script = (f"BEGIN IMMEDIATE;\n{sql}\n;\nINSERT INTO schema_migrations (version, name, applied_at)"
                  f" VALUES ({version}, '{name}', '{now_iso()}');\nCOMMIT;")
        try:
            await conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                await conn.execute_fetchall("ROLLBACK")
            raise RegistryError(f"migration {name} failed: {exc}") from None
