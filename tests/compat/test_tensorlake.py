"""Seed 003 (Tensorlake): DELETE /api/v1/processes/{pid} (SIGKILL, 204) and Send Signal."""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import NO_SUCH_PID, record_of, start, wait_idle
from tests.helpers import alive, async_wait_for, descendants_of, printed, start_ignoring_term

SIGNAL_REPORTER = ["python3", "-c",
                   "import signal,sys,time\n"
                   "signal.signal(signal.SIGUSR1, lambda *a: print('got USR1', flush=True))\n"
                   "print('ready', flush=True)\n"
                   "while True: time.sleep(1)"]



async def test_delete_204_kills_the_tree(client: Any) -> None:
    record = await start(client, ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"])
    await async_wait_for(lambda: _kids(record["pid"]))
    tree = descendants_of(record["pid"])
    response = await client.delete(f"/api/v1/processes/{record['pid']}")
    assert response.status == 204
    assert await response.read() == b""
    for pid in [record["pid"], *tree]:
        assert not alive(pid)
    final = await record_of(client, record["id"])
    assert final["state"] == "idle" and final["exitState"] == "canceled"
    assert final["exitSignal"] == "SIGKILL"


async def _kids(pid: int) -> bool:
    return len(descendants_of(pid)) >= 2


async def test_delete_404_with_code(client: Any, stranger: Any) -> None:
    for pid in (NO_SUCH_PID, stranger.pid):
        response = await client.delete(f"/api/v1/processes/{pid}")
        assert response.status == 404
        body = await response.json()
        assert body["code"] == "not_found" and isinstance(body["error"], str)
    assert alive(stranger.pid)
    record = await start(client, ["true"])
    await wait_idle(client, record["id"])
    response = await client.delete(f"/api/v1/processes/{record['pid']}")
    assert response.status == 404 and (await response.json())["code"] == "not_found"


async def test_delete_bad_pid_is_400_with_code(client: Any) -> None:
    response = await client.delete(f"/api/v1/processes/{'9' * 11}")   # no int32
    assert response.status == 400
    assert set(await response.json()) == {"error", "code"}
    response = await client.delete("/api/v1/processes/abc")   # a name, and no process has it
    assert response.status == 404 and (await response.json())["code"] == "not_found"


async def test_signal_200_delivers_it_and_state_is_unchanged(client: Any) -> None:
    record = await start(client, SIGNAL_REPORTER)
    await async_wait_for(lambda: printed(client, record["id"], "ready"))
    response = await client.post(f"/api/v1/processes/{record['pid']}/signal", json={"signal": 10})
    assert response.status == 200
    assert await response.json() == {"success": True}
    await async_wait_for(lambda: printed(client, record["id"], "got USR1"))
    assert (await record_of(client, record["id"]))["state"] == "running"
    response = await client.post(f"/api/v1/processes/{record['pid']}/signal", json={"signal": 15})
    assert response.status == 200
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed" and final["exitSignal"] == "SIGTERM"


@pytest.mark.parametrize("signal_value", [0, 999, -1, "TERM", 1.5, True, None])
async def test_signal_400_invalid_number(client: Any, signal_value: Any) -> None:
    record = await start(client)
    response = await client.post(f"/api/v1/processes/{record['pid']}/signal", json={"signal": signal_value})
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "invalid_signal"
    assert alive(record["pid"])
    await client.delete(f"/api/v1/processes/{record['pid']}")


async def test_signal_404_and_400_not_running(client: Any, stranger: Any) -> None:
    response = await client.post(f"/api/v1/processes/{stranger.pid}/signal", json={"signal": 15})
    assert response.status == 404 and (await response.json())["code"] == "not_found"
    assert alive(stranger.pid)
    record = await start(client, ["true"])
    await wait_idle(client, record["id"])
    response = await client.post(f"/api/v1/processes/{record['pid']}/signal", json={"signal": 15})
    assert response.status == 400 and (await response.json())["code"] == "not_running"


async def test_delete_finishes_a_terminating_process(client: Any) -> None:
    record = await start_ignoring_term(client, grace=60)
    await client.post(f"/processes/{record['id']}/signals/kill")
    response = await client.delete(f"/api/v1/processes/{record['pid']}")
    assert response.status == 204
    assert not alive(record["pid"])
