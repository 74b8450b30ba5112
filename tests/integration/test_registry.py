"""The registry on a real SQLite file: migrations, pragmas, ids, durability rules."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from daemon.model import State, now_iso
from daemon.registry import (
    DuplicateKey,
    Registry,
    RegistryError,
    StorageError,
    UnknownColumn,
    WriteRejected,
    known_migrations,
)

from .smallfs import small_fs


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


async def test_a_write_naming_no_column_is_refused_not_dropped(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    kept = await registry.insert(_row(ref="kept"))
    with pytest.raises(UnknownColumn, match="colour"):
        registry.insert(_row(colour="red"))
    with pytest.raises(UnknownColumn, match="id"):
        registry.insert(_row(id=99))                   # the id is SQLite's to assign
    with pytest.raises(UnknownColumn, match="colour"):
        registry.update(kept, ref="changed", colour="red")
    with pytest.raises(UnknownColumn, match="id"):
        registry.update(kept, id=99)
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        assert conn.execute("SELECT id, ref FROM processes").fetchall() == [(kept, "kept")]


async def test_a_table_that_does_not_match_the_record_refuses_to_open(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for _, name, sql in known_migrations():
        (migrations / name).write_text(sql)
    (migrations / "9000_drift.sql").write_text(
        "ALTER TABLE processes ADD COLUMN colour TEXT; ALTER TABLE processes DROP COLUMN request_hash;")
    with pytest.raises(RegistryError, match="missing: request_hash; unknown: colour"):
        await Registry.open(tmp_path / "r.db", migrations)


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
    registry = await Registry.open(tmp_path / "r.db")
    ids = await asyncio.gather(*[registry.insert(_row(ref=str(i))) for i in range(200)])
    assert len(set(ids)) == 200 and sorted(ids) == list(ids)
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        assert conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0] == 200


# --- failures are isolated per statement; storage failures fail the batch (issue 15) ---

async def test_a_statement_that_fails_fails_alone_and_the_batch_commits(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    good = [_row(ref=f"good-{i}") for i in range(20)]
    bad = [_row(ref="\ud800"),                      # UnicodeEncodeError while binding
           _row(cwd="/tmp/\udcff"),                 # the same, in another column
           _row(grace=10**30),                      # OverflowError: beyond 64 bits
           _row(idempotency_key="k"), _row(idempotency_key="k")]   # IntegrityError (the 2nd)
    rows = good[:10] + bad + good[10:]               # queued in one turn: one batch
    results = await asyncio.gather(*[registry.insert(row) for row in rows], return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert [type(f) for f in failures] == [WriteRejected, WriteRejected, WriteRejected, DuplicateKey]
    assert all(f.status == 400 and "cannot be stored" in f.message for f in failures[:3])
    assert "\\ud800" in failures[0].message  # escaped: the message itself can be sent as JSON
    update = registry.update(1, error="\ud800")     # an update that fails fails alone too
    other = registry.update(2, error="fine")
    with pytest.raises(WriteRejected):
        await update
    await other
    await registry.close()
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn, conn:
        refs = [r[0] for r in conn.execute("SELECT ref FROM processes ORDER BY id")]
        assert refs[:10] == [f"good-{i}" for i in range(10)]
        assert refs[-10:] == [f"good-{i}" for i in range(10, 20)]
        assert len(refs) == 21   # 20 good rows and the first insert of key "k"
        assert conn.execute("SELECT error FROM processes WHERE id IN (1, 2) ORDER BY id").fetchall() == \
            [(None,), ("fine",)]


async def test_a_full_disk_fails_the_batch_with_a_storage_error(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs") as fs:
        registry = await Registry.open(fs.root / "r.db")
        try:
            kept = await registry.insert(_row(ref="before"))
            fs.fill()
            results = await asyncio.gather(registry.insert(_row(ref="during")),
                                           registry.update(kept, error="during"),
                                           return_exceptions=True)
            for result in results:
                assert isinstance(result, StorageError), result
                assert result.status == 503 and "storage is failing" in result.message
                assert "full" in result.message
            with pytest.raises(StorageError):   # and the registry keeps refusing while full
                await registry.insert(_row(ref="still full"))
            fs.free()
            after = await registry.insert(_row(ref="after"))
            assert after > kept
        finally:
            await registry.close()
        with closing(sqlite3.connect(fs.root / "r.db")) as conn, conn:
            assert conn.execute("SELECT ref, error FROM processes ORDER BY id").fetchall() == \
                [("before", None), ("after", None)]
