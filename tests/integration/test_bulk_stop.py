"""Issue 21: the bulk stop (``POST /processes/stop``) and the one-round-trip stop
(``POST /processes/{id}/signals/kill?wait=S``), with real children, a real registry and
a real server. What a user sees is asserted: statuses, bodies, the registry, /proc."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from daemon.model import State

from ..helpers import alive, async_wait_for, descendants_of, start_ignoring_term
from .smallfs import small_fs


async def start(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/processes", json=body)
    assert response.status == 201, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def get(client: Any, process_id: int | str) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}")
    assert response.status == 200, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def wait_idle(client: Any, process_id: int) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}/wait", params={"timeout": "15"})
    assert response.status == 200, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def bulk(client: Any, body: Any, status: int = 200) -> Any:
    response = await client.post("/processes/stop", json=body)
    assert response.status == status, await response.text()
    return await response.json()


def committed_states(db: Path) -> dict[int, tuple[str, str | None]]:
    """(state, exit state) of every row as SQLite has it on disk, read with our own connection."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0]: (row[1], row[2])
                for row in conn.execute("SELECT id, state, exit_state FROM processes")}


# --- selectors --------------------------------------------------------------------------------

async def test_ids_stop_every_one_and_answer_idle_records_in_the_request_order(client: Any) -> None:
    sleepers = [await start(client, argv=["sleep", "300"]) for _ in range(3)]
    done = await start(client, argv=["true"])
    done = await wait_idle(client, done["id"])
    ids = [sleepers[2]["id"], done["id"], sleepers[0]["id"], sleepers[1]["id"], sleepers[0]["id"]]

    body = await bulk(client, {"ids": ids})

    records = body["processes"]
    assert [r["id"] for r in records] == ids[:4], "request order, each id once"
    assert all(r["state"] == "idle" for r in records)
    assert records[1] == done, "an id already idle is answered as it is"
    for record in (records[0], records[2], records[3]):
        assert record["exitState"] == "canceled" and record["exitSignal"] == "SIGTERM"
    assert not [s["pid"] for s in sleepers if alive(s["pid"])], "the answer came after /proc emptied"
    on_disk = committed_states(client.config.database_path)
    assert all(on_disk[s["id"]] == ("idle", "canceled") for s in sleepers)


async def test_ref_stops_only_the_live_records_carrying_it(client: Any) -> None:
    ours = [await start(client, argv=["sleep", "300"], ref="batch-1") for _ in range(3)]
    other = await start(client, argv=["sleep", "300"], ref="batch-2")
    finished = await start(client, argv=["true"], ref="batch-1")
    await wait_idle(client, finished["id"])

    body = await bulk(client, {"ref": "batch-1"})

    assert [r["id"] for r in body["processes"]] == [r["id"] for r in ours], \
        "live records only, oldest first (the finished one is not stopped again)"
    assert all(r["state"] == "idle" and r["exitState"] == "canceled" for r in body["processes"])
    assert not [r["pid"] for r in ours if alive(r["pid"])]
    still = await get(client, other["id"])
    assert still["state"] == "running" and alive(other["pid"])
    await bulk(client, {"ids": [other["id"]], "grace": 0})


async def test_state_queued_cancels_the_queue_and_state_running_stops_the_rest(
        make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=2)
    running = [await start(client, argv=["sleep", "300"]) for _ in range(2)]
    queued = [await start(client, argv=["sleep", "301"]) for _ in range(3)]
    assert [r["state"] for r in queued] == ["queued"] * 3

    canceled = (await bulk(client, {"state": "queued"}))["processes"]

    assert [r["id"] for r in canceled] == [r["id"] for r in queued]
    assert all(r["state"] == "idle" and r["exitState"] == "canceled" and r["pid"] is None
               for r in canceled)
    assert client.supervisor.queue_length == 0
    assert [(await get(client, r["id"]))["state"] for r in running] == ["running"] * 2

    stopped = (await bulk(client, {"state": "running", "grace": 5}))["processes"]

    assert [r["id"] for r in stopped] == [r["id"] for r in running]
    assert all(r["state"] == "idle" and r["exitSignal"] == "SIGTERM" for r in stopped)
    assert not [r["pid"] for r in running if alive(r["pid"])]
    assert client.supervisor.counts() == {"queued": 0, "running": 0, "terminating": 0}


async def test_ids_mixing_queued_and_running_records(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    first = await start(client, argv=["sleep", "300"])
    waiting = [await start(client, argv=["sleep", "301"]) for _ in range(3)]
    # Stopping the running one frees its slot: none of the queued ones named here may run.
    body = await bulk(client, {"ids": [waiting[1]["id"], first["id"], waiting[0]["id"]]})
    assert [r["exitState"] for r in body["processes"]] == ["canceled"] * 3
    assert body["processes"][0]["pid"] is None and body["processes"][2]["pid"] is None
    last = await async_wait_for(lambda: _running(client, waiting[2]["id"]), what="the last to run")
    assert alive(last["pid"]), "the one left in the queue took the free slot"
    await bulk(client, {"ids": [last["id"]], "grace": 0})


async def _running(client: Any, process_id: int) -> dict[str, Any] | None:
    record = await get(client, process_id)
    return record if record["state"] == "running" and record["pid"] else None


async def test_nothing_matching_is_an_empty_list(client: Any) -> None:
    bystander = await start(client, argv=["sleep", "300"], ref="keep")
    assert await bulk(client, {"ref": "no-such-ref"}) == {"processes": []}
    assert await bulk(client, {"state": "queued"}) == {"processes": []}
    assert (await get(client, bystander["id"]))["state"] == "running"
    await bulk(client, {"ref": "keep", "grace": 0})


async def test_an_unknown_id_is_a_404_naming_it_and_nothing_is_stopped(client: Any) -> None:
    live = [await start(client, argv=["sleep", "300"]) for _ in range(2)]
    response = await client.post("/processes/stop",
                                 json={"ids": [live[0]["id"], 987654, 987655, live[1]["id"]]})
    assert response.status == 404
    assert (await response.json())["error"] == "process 987654 not found"
    for record in live:
        assert (await get(client, record["id"]))["state"] == "running" and alive(record["pid"])
    await bulk(client, {"ids": [r["id"] for r in live], "grace": 0})


async def test_a_record_deleted_from_memory_is_found_in_the_registry(client: Any) -> None:
    """Idle records neither live nor recently settled come from one registry query."""
    finished = [await start(client, argv=["true"]) for _ in range(3)]
    for record in finished:
        await wait_idle(client, record["id"])
    for record in finished:   # as if they had settled long ago: only SQLite has them
        client.supervisor._table.recent.forget(record["id"])
    body = await bulk(client, {"ids": [r["id"] for r in finished]})
    assert [(r["id"], r["exitState"]) for r in body["processes"]] == \
        [(r["id"], "success") for r in finished]


# --- stragglers -------------------------------------------------------------------------------

async def test_stragglers_are_sigkilled_after_the_grace_and_the_answer_waits_for_proc(
        client: Any) -> None:
    stubborn = [await start_ignoring_term(client) for _ in range(2)]
    tree = await start(client, command="sleep 300 & sleep 300 & wait")
    await async_wait_for(lambda: _has_children(tree["pid"], 2), what="the grandchildren")
    members = [tree["pid"], *descendants_of(tree["pid"])]
    ids = [r["id"] for r in [*stubborn, tree]]

    body = await bulk(client, {"ids": ids, "grace": 0.5})

    by_id = {r["id"]: r for r in body["processes"]}
    for record in stubborn:
        assert by_id[record["id"]]["exitSignal"] == "SIGKILL", "it ignored SIGTERM: killed after the grace"
        assert not alive(record["pid"])
    assert by_id[tree["id"]]["exitState"] == "canceled"
    assert not [pid for pid in members if alive(pid)], "the whole tree was gone at the answer"


async def _has_children(pid: int, count: int) -> bool:
    return len(descendants_of(pid)) >= count


async def test_a_stop_that_never_escalates_is_sigkilled_after_the_bulk_grace(client: Any) -> None:
    """psys's route sends SIGTERM and never SIGKILL: a bulk stop of such a record still
    ends it once the grace has passed."""
    record = await start_ignoring_term(client)
    response = await client.post("/api/connections/kill", json={"pid": record["pid"]})
    assert response.status == 200, await response.text()
    assert (await get(client, record["id"]))["state"] == "terminating"

    body = await bulk(client, {"ids": [record["id"]], "grace": 0.3})

    assert body["processes"][0]["state"] == "idle"
    assert body["processes"][0]["exitSignal"] == "SIGKILL"
    assert not alive(record["pid"])


async def test_a_shorter_grace_cuts_short_a_stop_already_under_way(client: Any) -> None:
    """Killed with a 300 s grace, it ignores SIGTERM; a bulk stop with grace 0 SIGKILLs it
    now instead of waiting out the first kill's grace (as ``docker stop -t 0`` does)."""
    record = await start_ignoring_term(client, grace=300)
    assert (await client.post(f"/processes/{record['id']}/signals/kill")).status == 200
    assert (await get(client, record["id"]))["state"] == "terminating"

    body = await asyncio.wait_for(bulk(client, {"ids": [record["id"]], "grace": 0}), 60)

    assert body["processes"][0]["state"] == "idle"
    assert body["processes"][0]["exitSignal"] == "SIGKILL"
    assert not alive(record["pid"])


async def test_a_terminating_record_selected_by_ref_is_waited_for(client: Any) -> None:
    record = await start_ignoring_term(client, ref="slow", grace=0.5)
    assert (await client.post(f"/processes/{record['id']}/signals/kill")).status == 200
    body = await bulk(client, {"ref": "slow"})
    assert [(r["id"], r["state"], r["exitSignal"]) for r in body["processes"]] == \
        [(record["id"], "idle", "SIGKILL")]
    assert not alive(record["pid"])


async def test_many_records_stop_together(make_daemon: Any) -> None:
    client = await make_daemon()
    records = [await start(client, argv=["sleep", "300"], ref="many") for _ in range(60)]
    body = await bulk(client, {"ids": [r["id"] for r in records]})
    assert len(body["processes"]) == 60
    assert {r["state"] for r in body["processes"]} == {"idle"}
    assert not [r["pid"] for r in records if alive(r["pid"])]


# --- bad requests -----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "says"), [
    ({}, "exactly one of 'ids', 'ref' or 'state'"),
    ({"ids": [1], "ref": "x"}, "exactly one of"),
    ({"ids": None, "ref": None}, "exactly one of"),
    ({"ids": []}, "'ids' must be an array of 1 to 10000"),
    ({"ids": list(range(1, 10002))}, "'ids' must be an array of 1 to 10000"),
    ({"ids": "1"}, "'ids' must be an array"),
    ({"ids": [1, "2"]}, "'ids[1]' must be a process id"),
    ({"ids": [1, True]}, "'ids[1]' must be a process id"),
    ({"ids": [0]}, "'ids[0]' must be a process id"),
    ({"ids": [2**63]}, "'ids[0]' must be a process id"),
    ({"ids": [1.5]}, "'ids[0]' must be a process id"),
    ({"state": "idle"}, "'state' must be \"running\" or \"queued\""),
    ({"state": ["running"]}, "'state' must be"),
    ({"ref": ""}, "'ref' must not be empty"),
    ({"ref": 5}, "'ref' must be a string"),
    ({"state": "running", "grace": -1}, "'grace' must be at least 0"),
    ({"state": "running", "grace": "1"}, "'grace' must be a number"),
    ({"state": "running", "signal": "SIGINT"}, "unknown field 'signal'"),
    ([1, 2], "request body must be a JSON object"),
])
async def test_bad_bodies_are_400s_that_stop_nothing(client: Any, body: Any, says: str) -> None:
    bystander = await start(client, argv=["sleep", "300"])
    response = await client.post("/processes/stop", json=body)
    assert response.status == 400
    assert says in (await response.json())["error"]
    assert (await get(client, bystander["id"]))["state"] == "running"
    await bulk(client, {"ids": [bystander["id"]], "grace": 0})


async def test_no_body_is_a_400(client: Any) -> None:
    response = await client.post("/processes/stop")
    assert response.status == 400
    assert "a JSON request body is required" in (await response.json())["error"]


async def test_the_path_does_not_shadow_a_process_named_stop(client: Any) -> None:
    named = await start(client, argv=["sleep", "300"], name="stop")
    assert (await get(client, "stop"))["id"] == named["id"]   # GET /processes/stop: the name
    await bulk(client, {"ids": [named["id"]], "grace": 0})
    assert (await client.delete("/processes/stop")).status == 204   # DELETE: the name too
    assert (await client.get(f"/processes/{named['id']}")).status == 404
    # Any other method: a 405 allowing the concrete path's own method only (as OpenAPI
    # matches paths), not the union aiohttp computes with /processes/{id}'s GET and DELETE.
    for method in ("PUT", "OPTIONS"):
        refused = await client.request(method, "/processes/stop")
        assert refused.status == 405 and refused.headers["Allow"] == "POST"


# --- one-round-trip stop ----------------------------------------------------------------------

async def test_kill_with_wait_answers_the_idle_record_once_the_tree_is_gone(client: Any) -> None:
    record = await start(client, command="sleep 300 & sleep 300 & wait")
    await async_wait_for(lambda: _has_children(record["pid"], 2), what="the grandchildren")
    members = [record["pid"], *descendants_of(record["pid"])]
    response = await client.post(f"/processes/{record['id']}/signals/kill", params={"wait": "10"})
    assert response.status == 200, await response.text()
    final = await response.json()
    assert final["state"] == "idle" and final["exitState"] == "canceled"
    assert final["completedAt"] is not None
    assert not [pid for pid in members if alive(pid)]
    assert committed_states(client.config.database_path)[record["id"]] == ("idle", "canceled")


async def test_kill_with_wait_of_a_queued_record_is_its_canceled_record(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    first = await start(client, argv=["sleep", "300"])
    queued = await start(client, argv=["sleep", "301"])
    response = await client.post(f"/processes/{queued['id']}/signals/kill", params={"wait": "5"})
    assert response.status == 200
    assert (await response.json())["exitState"] == "canceled"
    await bulk(client, {"ids": [first["id"]], "grace": 0})


async def test_kill_with_a_short_wait_is_a_408_with_the_terminating_record(client: Any) -> None:
    record = await start_ignoring_term(client, grace=60)
    response = await client.post(f"/processes/{record['id']}/signals/kill", params={"wait": "0.2"})
    assert response.status == 408, await response.text()
    body = await response.json()
    assert body["id"] == record["id"] and body["state"] == "terminating"
    assert alive(record["pid"]), "it ignores SIGTERM and its grace is long: the stop goes on"
    # what a 408 shows is committed
    assert committed_states(client.config.database_path)[record["id"]] == ("terminating", None)
    final = await client.supervisor.force_kill(record["id"])
    assert final.state is State.IDLE and not alive(record["pid"])


@pytest.mark.parametrize("wait", ["0", "-1", "3601", "soon", "nan", "inf"])
async def test_kill_with_a_bad_wait_is_a_400_before_anything_is_stopped(client: Any, wait: str) -> None:
    record = await start(client, argv=["sleep", "300"])
    response = await client.post(f"/processes/{record['id']}/signals/kill", params={"wait": wait})
    assert response.status == 400
    assert "wait" in (await response.json())["error"]
    assert (await get(client, record["id"]))["state"] == "running" and alive(record["pid"])
    await bulk(client, {"ids": [record["id"]], "grace": 0})


async def test_kill_with_wait_keeps_the_kills_own_answers(client: Any) -> None:
    record = await start(client, argv=["true"])
    await wait_idle(client, record["id"])
    again = await client.post(f"/processes/{record['id']}/signals/kill", params={"wait": "5"})
    assert again.status == 409 and "idle" in (await again.json())["error"]
    missing = await client.post("/processes/987654/signals/kill", params={"wait": "5"})
    assert missing.status == 404
    not_a_number = await client.post("/processes/no-such-name/signals/kill", params={"wait": "5"})
    assert not_a_number.status == 400


async def test_kill_without_wait_is_unchanged(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"])
    response = await client.post(f"/processes/{record['id']}/signals/kill", json={})
    assert response.status == 200
    assert (await response.json())["state"] == "terminating"
    await wait_idle(client, record["id"])


# --- storage failing --------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path: Path) -> Any:
    with small_fs(tmp_path / "fs") as fs:
        yield fs


async def test_stops_that_cannot_be_recorded_are_a_503_and_undone(
        full_disk: Any, make_daemon: Any) -> None:
    client = await make_daemon(state_dir=full_disk.root / "state", max_concurrent=1)
    running = await start(client, argv=["sleep", "300"])
    queued = await start(client, argv=["sleep", "301"])
    full_disk.fill()

    response = await client.post("/processes/stop", json={"ids": [running["id"], queued["id"]]})

    assert response.status == 503, await response.text()
    error = (await response.json())["error"]
    assert "storage is failing" in error and f"process {running['id']} was not stopped" in error
    assert "1 more stops were not recorded either" in error
    assert (await get(client, running["id"]))["state"] == "running" and alive(running["pid"])
    assert (await get(client, queued["id"]))["state"] == "queued"
    assert client.supervisor.queue_length == 1, "the queued one is back in its place"

    # The one-round-trip stop keeps the same promise: 503, nothing signalled, still running.
    response = await client.post(f"/processes/{running['id']}/signals/kill", params={"wait": "10"})
    assert response.status == 503, await response.text()
    assert f"process {running['id']} was not stopped" in (await response.json())["error"]
    assert (await get(client, running["id"]))["state"] == "running" and alive(running["pid"])

    full_disk.free()
    body = await bulk(client, {"ids": [running["id"], queued["id"]], "grace": 0})
    assert [r["exitState"] for r in body["processes"]] == ["canceled", "canceled"]
    assert not alive(running["pid"])

