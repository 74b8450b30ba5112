"""The registry's write connection, alone on its own thread, committing in groups.

Writes go to one writer thread that commits whatever has queued up in a single
transaction (group commit): under a burst of 200 spawns the daemon pays for a
handful of commits instead of 400, while each caller still waits for its own
commit. The thread takes every queued write whenever it is free (it never waits
on the event loop between batches), and a batch's outcome comes back in one
``call_soon_threadsafe`` that settles every caller's future. That thread is our
own rather than aiosqlite's: a commit is on the critical path of every transition
(a kill's 2xx waits for it), and aiosqlite's call-and-await costs a task start and
two more turns of the event loop per commit, about 0.2 ms of a 2 ms kill.

How a batch's failures are split between its writes: see :mod:`.failures`.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .failures import StorageError, WriteRejected, is_storage_failure, printable

PRAGMAS = ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000")

Write = tuple[str, tuple[Any, ...], bool, "asyncio.Future[Any]"]   # sql, params, insert, caller
_Results = list[tuple[Any, BaseException | None]]                 # per write: (value, failure)


def _settle(batch: list[Write], results: _Results | None,
            error: BaseException | None) -> None:
    """On the loop: a batch is done; resolve each caller's future."""
    if results is None:  # the whole batch failed: nobody's write is durable
        message = f"storage is failing: the registry could not commit ({printable(str(error))})"
        for _, _, _, future in batch:
            if not future.done():
                future.set_exception(StorageError(message))
        return
    for (_, _, _, future), (value, failure) in zip(batch, results, strict=True):
        if future.done():
            continue
        if failure is not None:
            future.set_exception(WriteRejected(failure))
        else:
            future.set_result(value)


class WriterThread:
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
        self._pending: list[Write] = []                               # this turn's writes
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            self._conn.execute(f"PRAGMA {pragma}")
        self._thread = threading.Thread(target=self._run, name="stablehand-registry-writer",
                                        daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
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

    def _commit(self, batch: list[Write]) -> None:
        results: _Results | None = None
        error: BaseException | None = None
        try:
            results = apply_batch(self._conn, [(sql, params, insert) for sql, params, insert, _ in batch])
        except BaseException as exc:  # reported to every caller of the batch
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


def apply_batch(conn: sqlite3.Connection, statements: list[tuple[str, tuple[Any, ...], bool]]) -> _Results:
    """Run on the connection's thread: one transaction for a batch of writes.

    A statement-level failure fails only its own statement (SQLite undoes just
    that statement; a bind error runs nothing) and is returned in its slot; a
    storage failure, or any error after which the transaction is gone, rolls
    the whole batch back and is raised (see failures.py).
    """
    results: _Results = []
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
