"""Seed 000 (reference-server): POST /api/process/terminate-gracefully/<int:pid> {timeout}."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.compat.conftest import ISO_UTC, NO_SUCH_PID, start, wait_idle
from tests.helpers import alive, start_ignoring_term


def _assert_failure(body: dict[str, Any], pid: int, error: str | None = None) -> None:
    assert set(body) == {"success", "error", "pid", "timestamp"}
    assert body["success"] is False and body["pid"] == pid
    assert body["error"] == (error or f"Failed to terminate process {pid}")
    assert ISO_UTC.match(body["timestamp"])


async def test_200_when_the_process_is_gone(client: Any) -> None:
    record = await start(client)
    response = await client.post(f"/api/process/terminate-gracefully/{record['pid']}", json={"timeout": 5})
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"success", "message", "pid", "timestamp"}
    assert body == {"success": True, "message": f"Process {record['pid']} terminated successfully",
                    "pid": record["pid"], "timestamp": body["timestamp"]}
    assert ISO_UTC.match(body["timestamp"])
    assert not alive(record["pid"]), "answered only once the process is gone"
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled"


async def test_sigterm_ignored_means_sigkill_after_timeout(client: Any) -> None:
    record = await start_ignoring_term(client)
    began = time.monotonic()
    response = await client.post(f"/api/process/terminate-gracefully/{record['pid']}",
                                 json={"timeout": 0.5})
    assert response.status == 200
    assert time.monotonic() - began >= 0.5
    assert not alive(record["pid"])
    final = await wait_idle(client, record["id"])
    assert final["exitSignal"] == "SIGKILL"



async def test_400_for_a_stranger_or_nothing(client: Any, stranger: Any) -> None:
    for pid in (stranger.pid, NO_SUCH_PID):
        response = await client.post(f"/api/process/terminate-gracefully/{pid}")
        assert response.status == 400
        _assert_failure(await response.json(), pid)
    assert alive(stranger.pid)


async def test_400_when_not_running(client: Any) -> None:
    record = await start(client, ["true"])
    await wait_idle(client, record["id"])
    response = await client.post(f"/api/process/terminate-gracefully/{record['pid']}")
    assert response.status == 400
    _assert_failure(await response.json(), record["pid"])


@pytest.mark.parametrize("timeout", [-1, "soon", 1e9, True, None])
async def test_400_for_a_bad_timeout(client: Any, timeout: Any) -> None:
    record = await start(client)
    response = await client.post(f"/api/process/terminate-gracefully/{record['pid']}",
                                 json={"timeout": timeout})
    assert response.status == 400
    body = await response.json()
    assert body["success"] is False and "Invalid timeout" in body["error"]
    assert alive(record["pid"])
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_default_timeout_is_30_seconds(client: Any) -> None:
    record = await start(client)
    response = await client.post(f"/api/process/terminate-gracefully/{record['pid']}")
    assert response.status == 200, await response.text()
    assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"


async def test_allow_unmanaged_terminates_a_stranger(make_daemon: Any, stranger: Any) -> None:
    client = await make_daemon(allow_unmanaged=True)
    response = await client.post(f"/api/process/terminate-gracefully/{stranger.pid}", json={"timeout": 2})
    assert response.status == 200
    assert (await response.json())["success"] is True
    stranger.wait(5)
