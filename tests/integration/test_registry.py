"""The registry on a real SQLite file: migrations, pragmas, ids, durability rules."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from daemon.model import State, now_iso
from daemon.registry import DuplicateKey, Registry, RegistryError, known_migrations


def _row(**extra: object) -> dict[str, object]:
    return {"state": State.QUEUED, "argv": ["true"], "env": {}, "created_at": now_iso(), **extra}


async def test_migrations_are_recorded_and_wal_is_on(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [v for v, _, _ in known_migrations()]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_reopen_applies_nothing_twice(tmp_path: Path) -> None:
    for _ in range(2):
        registry = await Registry.open(tmp_path / "r.db")
        await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(known_migrations())


async def test_newer_database_refuses_to_open(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 'x')")
    with pytest.raises(RegistryError, match="newer than this Stablehand"):
        await Registry.open(tmp_path / "r.db")


async def test_failed_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (migrations / "0002_bad.sql").write_text("CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);")
    with pytest.raises(RegistryError, match="0002_bad.sql"):
        await Registry.open(tmp_path / "r.db", migrations)
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "a" in tables and "b" not in tables
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]


async def test_ids_increase_and_are_never_reused(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    first = await registry.insert(_row())
    second = await registry.insert(_row())
    await registry.delete(second)
    await registry.close()
    registry = await Registry.open(tmp_path / "r.db")
    third = await registry.insert(_row())
    assert first < second < third
    await registry.close()


async def test_idempotency_keys_are_unique(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    await registry.insert(_row(idempotency_key="k1"))
    with pytest.raises(DuplicateKey):
        await registry.insert(_row(idempotency_key="k1"))
    other = await registry.insert(_row(idempotency_key="k2"))  # the batch goes on after a clash
    assert (await registry.get(other)).idempotency_key == "k2"
    await registry.close()


async def test_concurrent_writes_are_all_committed(tmp_path: Path) -> None:
    import asyncio
    registry = await Registry.open(tmp_path / "r.db")
    ids = await asyncio.gather(*[registry.insert(_row(ref=str(i))) for i in range(200)])
    assert len(set(ids)) == 200 and sorted(ids) == list(ids)
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        assert conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0] == 200
