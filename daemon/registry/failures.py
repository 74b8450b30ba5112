"""The registry's errors, and which SQLite failures mean the storage itself is failing.

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

A write naming a key that is no column is :class:`UnknownColumn`: a bug in the
caller, raised at once, and deliberately not a RegistryError (which callers treat
as storage trouble and retry).
"""

from __future__ import annotations

import sqlite3

from ..errors import BadRequest, StablehandError, Unavailable


class RegistryError(StablehandError):
    """The registry cannot be opened or used (schema too new, corrupt file...)."""


class UnknownColumn(StablehandError, ValueError):
    """A write named a key that is no writable column: a bug in the caller, never a
    storage failure (so not a RegistryError, which callers treat as one)."""


class StorageError(RegistryError, Unavailable):
    """The database could not commit (or read): disk full, read-only, I/O error, locked.

    An ``Unavailable``: the HTTP layer renders it as 503 with its message.
    """


class WriteRejected(RegistryError, BadRequest):
    """One statement refused its values (a lone surrogate, a 65-bit int...); the
    other writes of its batch were committed. A 400: the values came with a request."""

    def __init__(self, cause: BaseException) -> None:
        detail = printable(f"{cause}" or type(cause).__name__)
        super().__init__(f"a value of this request cannot be stored: {detail}")
        self.cause = cause


class DuplicateKey(RegistryError):
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


def printable(text: str) -> str:
    """``text`` with whatever UTF-8 cannot encode (lone surrogates) escaped: safe to send."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by sqlite3) says the storage is failing, not one statement."""
    if isinstance(exc, MemoryError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES
