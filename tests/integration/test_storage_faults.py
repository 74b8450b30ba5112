"""No request can harm another, and storage failures are told honestly (issue 15).

Everything here is real: children, the SQLite file, and its failures (a tmpfs
filled up, a write lock held by another connection). The surrogate burst is
reproduced beneath the HTTP edge (which now refuses surrogates with a 400): the
supervisor is called with the bad spec directly, as the edge used to let through.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import MutableMapping
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog

from daemon.errors import BadRequest
from daemon.model import Process, StartSpec, State

from ..helpers import alive, async_wait_for, marked_processes
from .smallfs import small_fs

BURST = 300


def _rows(db: Path) -> dict[int, dict[str, Any]]:
    """The registry as SQLite has it on disk, read with a connection of our own."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in conn.execute("SELECT * FROM processes")}


def _running_argvs() -> list[list[str]]:
    """Command lines of this test process's live children (zombies excluded)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.cmdline())
        except psutil.Error:
            pass
    return found


async def _spawned(argv: list[str]) -> bool:
    return argv in _running_argvs()


async def _gone(argv: list[str]) -> bool:
    return argv not in _running_argvs()


async def _stop_all(supervisor: Any, ids: list[int]) -> None:
    for process_id in ids:
        if supervisor.is_active(process_id):
            await supervisor.stop(process_id, grace=0)
        await supervisor.wait(process_id, 15)


# --- the surrogate burst ---------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"ref": "\ud800"}, {"cwd": "/tmp/\udcff"}, {"grace": 10**30}],
                         ids=["surrogate-ref", "surrogate-cwd", "65-bit-int"])
async def test_one_unstorable_start_in_a_burst_fails_alone(make_daemon: Any, bad: dict[str, Any]) -> None:
    client = await make_daemon(max_concurrent=4)
    supervisor = client.supervisor
    specs = [StartSpec(argv=["true"], ref=f"good-{i}") for i in range(BURST)]
    specs[BURST // 2] = StartSpec(argv=["true"], **{"ref": "bad", **bad})
    results = await asyncio.gather(*(supervisor.create(spec) for spec in specs), return_exceptions=True)

    failure = results.pop(BURST // 2)
    assert isinstance(failure, BadRequest) and "cannot be stored" in failure.message, failure
    assert not [r for r in results if isinstance(r, BaseException)], "a good start failed"
    ids = [record.id for record, created in results]  # type: ignore[misc]
    assert len(set(ids)) == BURST - 1
    for process_id in ids:
        final, done = await supervisor.wait(process_id, 30)
        assert done and final.state is State.IDLE and final.exit_state.value == "success", final

    rows = _rows(client.config.database_path)
    assert sorted(rows) == sorted(ids)   # the bad start left no row; every good one has its own
    assert {(r["state"], r["exit_state"]) for r in rows.values()} == {("idle", "success")}
    assert all(r["pid"] is not None and not alive(r["pid"]) for r in rows.values())

    # No slot leaked: with max_concurrent=4, four new starts all run at once.
    runners = [(await supervisor.create(StartSpec(argv=["sleep", "300"])))[0] for _ in range(4)]
    try:
        assert [r.state for r in runners] == [State.RUNNING] * 4
        assert all(alive(r.pid) for r in runners)
        assert supervisor.queue_length == 0
    finally:
        await _stop_all(supervisor, [r.id for r in runners])


# --- a full disk ---------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path: Path) -> Any:
    with small_fs(tmp_path / "fs") as fs:
        yield fs


async def test_a_start_while_the_disk_is_full_gets_503_and_spawns_nothing(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state")
    full_disk.fill()

    response = await client.post("/processes", json={"argv": ["sleep", "301"], "ref": "full"})
    assert response.status == 503, await response.text()
    error = (await response.json())["error"]
    assert "storage is failing" in error and "full" in error and "not created" in error
    assert ["sleep", "301"] not in _running_argvs()
    assert _rows(client.config.database_path) == {}

    full_disk.free()
    response = await client.post("/processes", json={"argv": ["sleep", "301"], "ref": "after"})
    assert response.status == 201, await response.text()
    record = await response.json()
    assert record["state"] == "running" and alive(record["pid"])
    await _stop_all(client.supervisor, [record["id"]])


async def test_an_exit_while_the_disk_is_full_is_served_from_memory_then_saved(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state")
    supervisor, db = client.supervisor, client.config.database_path
    response = await client.post("/processes", json={"argv": ["cat"], "stdin": "pipe", "ref": "cat"})
    assert response.status == 201, await response.text()
    record = await response.json()
    process_id, pid = record["id"], record["pid"]

    with structlog.testing.capture_logs() as logs:
        full_disk.fill()
        # A kill cannot be recorded: refused with 503, nothing is signalled.
        response = await client.post(f"/processes/{process_id}/signals/kill", json={})
        assert response.status == 503, await response.text()
        assert "storage is failing" in (await response.json())["error"]
        assert alive(pid)
        assert (await (await client.get(f"/processes/{process_id}")).json())["state"] == "running"

        await supervisor.close_stdin(process_id)   # cat exits 0, while the disk is full
        response = await client.get(f"/processes/{process_id}/wait", params={"timeout": "10"})
        assert response.status == 200
        final = await response.json()
        assert (final["state"], final["exitState"], final["exitCode"]) == ("idle", "success", 0)
        got = await (await client.get(f"/processes/{process_id}")).json()
        assert (got["state"], got["exitState"]) == ("idle", "success")
        listed = (await (await client.get("/processes")).json())["processes"]
        assert [(p["id"], p["state"], p["exitState"]) for p in listed] == [(process_id, "idle", "success")]
        assert _rows(db)[process_id]["state"] == "running"   # the disk really refused it

        full_disk.free()
        await async_wait_for(lambda: _committed(db, process_id, "idle"), 15, "the exit to be saved")
    row = _rows(db)[process_id]
    assert (row["state"], row["exit_state"], row["exit_code"]) == ("idle", "success", 0)
    events = [entry["event"] for entry in logs]
    assert "registry.unsaved" in events and "registry.recovered" in events


async def _saved(db: Path, record: dict[str, Any]) -> bool:
    row = _rows(db).get(record["id"])
    return row is not None and (row["state"], row["exit_state"], row["pid"]) == \
        (record["state"], record["exitState"], record["pid"])


async def _committed(db: Path, process_id: int, state: str) -> bool:
    row = _rows(db).get(process_id)
    return row is not None and row["state"] == state


async def test_a_queued_start_that_cannot_be_recorded_running_never_runs(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state", max_concurrent=1)
    supervisor, db = client.supervisor, client.config.database_path
    first, _ = await supervisor.create(StartSpec(argv=["cat"], stdin="pipe"))
    queued, _ = await supervisor.create(StartSpec(argv=["sleep", "302"]))
    assert (first.state, queued.state) == (State.RUNNING, State.QUEUED)

    full_disk.fill()
    await supervisor.close_stdin(first.id)   # frees the slot: the queued one is admitted
    final, done = await supervisor.wait(queued.id, 10)
    assert done and final.exit_state.value == "failed" and final.pid is None
    assert "not started" in final.error and "storage is failing" in final.error
    assert ["sleep", "302"] not in _running_argvs()
    assert not marked_processes(queued.id, supervisor._instance)
    got = await (await client.get(f"/processes/{queued.id}")).json()
    assert (got["state"], got["exitState"]) == ("idle", "failed")

    full_disk.free()
    await async_wait_for(lambda: _committed(db, queued.id, "idle"), 15, "the failure to be saved")
    rows = _rows(db)
    assert (rows[first.id]["state"], rows[first.id]["exit_state"]) == ("idle", "success")
    assert rows[queued.id]["exit_state"] == "failed" and "not started" in rows[queued.id]["error"]
    # Its slot was released: the next start runs at once.
    after, _ = await supervisor.create(StartSpec(argv=["sleep", "300"]))
    assert after.state is State.RUNNING and alive(after.pid)
    await _stop_all(supervisor, [after.id])


async def test_a_queued_kill_that_cannot_be_recorded_keeps_its_place(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state", max_concurrent=1)
    supervisor = client.supervisor
    first, _ = await supervisor.create(StartSpec(argv=["cat"], stdin="pipe"))
    queued, _ = await supervisor.create(StartSpec(argv=["cat"], stdin="pipe"))
    full_disk.fill()
    response = await client.post(f"/processes/{queued.id}/signals/kill", json={})
    assert response.status == 503, await response.text()
    assert "still queued" in (await response.json())["error"]
    assert (await supervisor.get(queued.id)).state is State.QUEUED
    full_disk.free()
    await supervisor.close_stdin(first.id)
    ran = await async_wait_for(lambda: _running(supervisor, queued.id), 10, "the queued one to run")
    assert alive(ran.pid)
    await supervisor.close_stdin(queued.id)
    final, done = await supervisor.wait(queued.id, 10)
    assert done and final.exit_state.value == "success"


async def _running(supervisor: Any, process_id: int) -> Process | None:
    record = await supervisor.get(process_id)
    return record if record.state is State.RUNNING and record.pid else None


async def test_a_timeout_that_cannot_be_recorded_is_enforced_once_storage_is_back(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state")
    supervisor, db = client.supervisor, client.config.database_path
    with structlog.testing.capture_logs() as logs:
        record, _ = await supervisor.create(StartSpec(argv=["sleep", "303"], timeout=0.5))
        full_disk.fill()
        await async_wait_for(lambda: _logged(logs, "process.stop_unsaved"), 10, "the stop to be refused")
    assert alive(record.pid) and (await supervisor.get(record.id)).state is State.RUNNING
    full_disk.free()
    final, done = await supervisor.wait(record.id, 15)
    assert done and final.exit_state.value == "timeout" and not alive(record.pid)
    await async_wait_for(lambda: _committed(db, record.id, "idle"), 15, "the timeout to be saved")
    assert _rows(db)[record.id]["exit_state"] == "timeout"


async def _logged(logs: list[MutableMapping[str, Any]], event: str) -> bool:
    return any(entry["event"] == event for entry in logs)


# --- a pid that cannot be recorded ---------------------------------------------------

async def test_a_pid_that_cannot_be_recorded_stops_the_child(make_daemon: Any) -> None:
    """The row is committed, the child spawned, then the database is locked by another
    connection for longer than busy_timeout: the pid's commit fails for real."""
    client = await make_daemon()
    supervisor, db = client.supervisor, client.config.database_path
    lock = sqlite3.connect(db, isolation_level=None)

    def lock_the_database(snapshot: Process) -> None:
        # Runs as the committed ``running`` record is published, just before its spawn.
        if snapshot.ref == "victim" and snapshot.pid is None and not lock.in_transaction:
            lock.execute("BEGIN IMMEDIATE")

    supervisor._listeners.append(lock_the_database)
    try:
        start = asyncio.ensure_future(client.post(
            "/processes", json={"argv": ["sleep", "304"], "ref": "victim"}))
        # The child runs while its pid's commit waits out busy_timeout, then is killed.
        await async_wait_for(lambda: _spawned(["sleep", "304"]), 30, "the child to be spawned")
        await async_wait_for(lambda: _gone(["sleep", "304"]), 30, "the child to be stopped")
        lock.execute("ROLLBACK")   # storage is back: the failure can be saved
        response = await start
        assert response.status == 201, await response.text()
        record = await response.json()
        assert (record["state"], record["exitState"]) == ("idle", "failed")
        assert "pid could not be recorded" in record["error"] and "locked" in record["error"]
        assert record["pid"] is not None and not alive(record["pid"])
        assert not marked_processes(record["id"], supervisor._instance)
        await async_wait_for(lambda: _saved(db, record), 15, "the failure and its pid to be saved")
    finally:
        supervisor._listeners.remove(lock_the_database)
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()


async def test_a_start_is_answered_once_what_it_shows_is_committed(client: Any) -> None:
    """What a start's 201 shows is in SQLite when it arrives, for a child that runs (its pid)
    and for one that cannot start (its failed end)."""
    db = client.config.database_path
    response = await client.post("/processes", json={"argv": ["sleep", "300"]})
    assert response.status == 201, await response.text()
    body = await response.json()
    row = _rows(db)[body["id"]]
    assert (row["state"], row["pid"]) == ("running", body["pid"]) and body["pid"]
    response = await client.post("/processes", json={"argv": ["/nonexistent/program-xyz"]})
    assert response.status == 201, await response.text()
    failed = await response.json()
    row = _rows(db)[failed["id"]]
    assert (row["state"], row["exit_state"]) == (failed["state"], failed["exitState"])
    await client.supervisor.force_kill(body["id"])
