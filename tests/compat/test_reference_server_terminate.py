"""Seed 001 (reference-server): POST /api/processes/terminate/<int:pid> {force}."""

from __future__ import annotations

import signal
from typing import Any

from tests.compat.conftest import ISO_UTC, NO_SUCH_PID, record_of, start, wait_idle
from tests.helpers import alive, async_wait_for, descendants_of, start_ignoring_term


async def test_200_terminates_the_tree(client: Any) -> None:
    record = await start(client, ["sh", "-c", "sleep 300 & sleep 300 & wait"])
    await async_wait_for(lambda: _has_children(record["pid"], 2))
    tree = descendants_of(record["pid"])
    response = await client.post(f"/api/processes/terminate/{record['pid']}")
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"success", "pid", "status", "message", "timestamp"}
    assert body["success"] is True and body["pid"] == record["pid"]
    assert body["status"] == "terminated" and body["message"] == "Process terminated successfully"
    assert ISO_UTC.match(body["timestamp"])
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled" and final["exitSignal"] == "SIGTERM"
    for pid in [record["pid"], *tree]:
        assert not alive(pid)


async def _has_children(pid: int, n: int) -> bool:
    return len(descendants_of(pid)) >= n


async def test_200_force_sends_sigkill(client: Any) -> None:
    record = await start_ignoring_term(client, grace=60)
    response = await client.post(f"/api/processes/terminate/{record['pid']}", json={"force": True})
    assert response.status == 200 and (await response.json())["success"] is True
    final = await wait_idle(client, record["id"])
    assert final["exitSignal"] == "SIGKILL" and final["exitState"] == "canceled"
    assert not alive(record["pid"])


async def test_404_for_a_pid_we_did_not_start(client: Any, stranger: Any) -> None:
    response = await client.post(f"/api/processes/terminate/{stranger.pid}")
    assert response.status == 404
    assert await response.json() == {"error": f"Process not found: PID {stranger.pid}"}
    assert alive(stranger.pid)
    response = await client.post(f"/api/processes/terminate/{NO_SUCH_PID}", json={"force": True})
    assert response.status == 404
    assert await response.json() == {"error": f"Process not found: PID {NO_SUCH_PID}"}


async def test_400_already_terminated(client: Any) -> None:
    record = await start(client, ["true"])
    await wait_idle(client, record["id"])
    response = await client.post(f"/api/processes/terminate/{record['pid']}")
    assert response.status == 400
    assert await response.json() == {"error": f"Process already terminated: PID {record['pid']}"}


async def test_400_while_terminating(client: Any) -> None:
    record = await start_ignoring_term(client, grace=60)
    assert (await client.post(f"/api/processes/terminate/{record['pid']}")).status == 200
    response = await client.post(f"/api/processes/terminate/{record['pid']}")
    assert response.status == 400
    assert await response.json() == {"error": f"Process already terminated: PID {record['pid']}"}
    assert alive(record["pid"]), "SIGTERM is ignored and the grace is long"
    await client.delete(f"/api/v1/processes/{record['pid']}")
    await wait_idle(client, record["id"])



async def test_400_bad_pid_and_bad_force(client: Any) -> None:
    response = await client.post("/api/processes/terminate/abc")
    assert response.status == 400 and "Invalid PID" in (await response.json())["error"]
    record = await start(client)
    response = await client.post(f"/api/processes/terminate/{record['pid']}", json={"force": "yes"})
    assert response.status == 400 and "force" in (await response.json())["error"]
    assert (await record_of(client, record["id"]))["state"] == "running"
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_allow_unmanaged_terminates_a_stranger(make_daemon: Any, stranger: Any) -> None:
    client = await make_daemon(allow_unmanaged=True)
    response = await client.post(f"/api/processes/terminate/{stranger.pid}")
    assert response.status == 200

    async def stranger_exited() -> bool:
        return stranger.poll() is not None  # our own child: poll() reaps it, by its pid

    await async_wait_for(stranger_exited, what="the stranger to exit")
    assert stranger.returncode == -signal.SIGTERM
