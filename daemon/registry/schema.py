"""The registry's schema, from one source: the fields of :class:`~daemon.model.Process`.

The ``processes`` table's columns are the record's fields, one for one. Migrations
in migrations/NNNN_name.sql are applied in order at open, each in one transaction
together with the row that records it; a database that has migrations this code
does not know refuses to open. Applied migrations are known by their version alone
(nothing is checksummed), so a comment in one may be corrected. Once migrated, the
table is checked against the record: other columns (one missing, one unknown) and
the registry refuses to open, naming the difference, so a migration and the
dataclass cannot drift apart unnoticed. An insert or update naming a key that is no
writable column raises :class:`UnknownColumn` at once instead of dropping it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ..managed import spec_from_text, spec_to_text, state_from_text, state_to_text
from ..model import ExitState, Process, State, StopReason, now_iso
from .failures import RegistryError, UnknownColumn

_DAEMON_DIR = Path(__file__).resolve().parent.parent
MIGRATIONS_DIRS = (_DAEMON_DIR / "_migrations", _DAEMON_DIR.parent / "migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")

# The processes table's columns: the record's fields, one for one (checked at open).
COLUMNS = tuple(field.name for field in dataclasses.fields(Process))
_WRITABLE = frozenset(COLUMNS) - {"id"}   # the id is SQLite's to assign
_JSON_COLUMNS = frozenset({"argv", "env"})
SELECT = f"SELECT {', '.join(COLUMNS)} FROM processes"


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


def row_to_process(row: Sequence[Any]) -> Process:
    data = dict(zip(COLUMNS, row, strict=True))
    data["state"] = State(data["state"])
    data["exit_state"] = ExitState(data["exit_state"]) if data["exit_state"] else None
    data["stop_reason"] = StopReason(data["stop_reason"]) if data["stop_reason"] else None
    data["argv"] = json.loads(data["argv"])
    data["env"] = json.loads(data["env"])
    data["managed"] = spec_from_text(data["managed"])
    data["managed_state"] = state_from_text(data["managed_state"])
    data["tty"] = json.loads(data["tty"]) if data["tty"] is not None else None
    return Process(**data)


def _tty_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


# The columns whose values are stored as text of their own; every other value is stored
# as it is, an enum as its value. One dict lookup per column: an insert converts 37.
_CONVERTERS: dict[str, Any] = {
    **{key: json.dumps for key in _JSON_COLUMNS},
    "managed": spec_to_text, "managed_state": state_to_text, "tty": _tty_text}


def to_column(key: str, value: Any) -> Any:
    convert = _CONVERTERS.get(key)
    if convert is not None:
        return convert(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def check_writable(columns: Iterable[str]) -> None:
    unknown = set(columns) - _WRITABLE
    if unknown:
        raise UnknownColumn(f"not writable columns of processes: {', '.join(sorted(unknown))}")


@functools.lru_cache(maxsize=64)
def update_sql(columns: tuple[str, ...]) -> str:
    """UPDATE for a set of columns (the supervisor uses a handful of sets, over and over)."""
    check_writable(columns)
    return f"UPDATE processes SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?"


async def migrate(conn: aiosqlite.Connection, migrations: list[tuple[int, str, str]]) -> None:
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


async def check_schema(conn: aiosqlite.Connection) -> None:
    """The processes table, once migrated, has exactly the record's fields as columns."""
    rows = await conn.execute_fetchall("SELECT name FROM pragma_table_info('processes')")
    table = {str(row[0]) for row in rows}
    missing, extra = sorted(set(COLUMNS) - table), sorted(table - set(COLUMNS))
    if missing or extra:
        raise RegistryError(
            "the registry's processes table does not match this Stablehand's record "
            f"(columns missing: {', '.join(missing) or 'none'}; unknown: {', '.join(extra) or 'none'}); "
            "a migration is missing or the database was changed by hand")
