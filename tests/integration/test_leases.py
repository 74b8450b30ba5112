"""Leases (issue 20): a process lives while its owner renews it, and is stopped when the
lease lapses. (A daemon restart re-arming a lease: tests/system/test_leases_restart.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from daemon.model import iso_to_epoch
from tests.helpers import alive, async_wait_for, printed
from tests.integration.test_processes import get, start, wait_idle


def _epoch(text: str | None) -> float:
    value = iso_to_epoch(text)
    assert value is not None, text
    return value


async def _lapsed(client: Any, process_id: int, pid: int | None) -> dict[str, Any]:
    record = await wait_idle(client, process_id, timeout=20)
    assert record["exitState"] == "canceled" and record["error"] == "lease expired"
    if pid is not None:
        assert not alive(pid)
    return record


async def _after(when: float) -> bool:
    return time.time() > when


async def _keep_renewing(client: Any, process_id: int, until: float, **body: Any) -> None:
    while time.monotonic() < until:
        response = await client.post(f"/processes/{process_id}/lease", json=body)
        assert response.status == 200, await response.text()
        await asyncio.sleep(0.2)


async def test_a_lapsed_lease_stops_the_process(client: Any) -> None:
    began = time.time()
    record = await start(client, argv=["sleep", "300"], lease=1)
    assert record["lease"] == 1
    expires = _epoch(record["leaseExpiresAt"])
    assert began + 1 - 0.01 <= expires <= time.time() + 1 + 0.01
    final = await _lapsed(client, record["id"], record["pid"])
    assert final["exitSignal"] == "SIGTERM"   # stopped with its grace, as a kill stops it


async def test_renewals_keep_it_past_its_first_expiry_until_they_stop(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"], lease=1)
    await _keep_renewing(client, record["id"], time.monotonic() + 3)   # three lease lengths
    assert (await get(client, record["id"]))["state"] == "running" and alive(record["pid"])
    await _lapsed(client, record["id"], record["pid"])


async def test_polls_renew_it_for_as_long_as_they_wait(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"], lease=1)
    for _ in range(3):    # each poll waits past the lease's length
        response = await client.post(f"/processes/{record['id']}/poll", json={"yieldMs": 1500})
        assert response.status == 200 and (await response.json())["state"] == "running"
    assert alive(record["pid"])
    await _lapsed(client, record["id"], record["pid"])


async def test_an_open_follow_renews_it(client: Any) -> None:
    record = await start(client, command="echo up; sleep 300", lease=1)
    await async_wait_for(lambda: printed(client, record["id"], "up"), what="the child to start")
    response = await client.get(f"/processes/{record['id']}/output", params={"follow": "1"})
    assert await response.content.readline() == b"up\n"
    past = _epoch(record["leaseExpiresAt"]) + 1.5   # the follow stays open past the lease
    await async_wait_for(lambda: _after(past), what="the first expiry to be well past")
    assert (await get(client, record["id"]))["state"] == "running"
    response.close()
    await _lapsed(client, record["id"], record["pid"])


async def test_seconds_change_the_lease_or_give_one(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"])
    assert "lease" not in record
    response = await client.post(f"/processes/{record['id']}/lease", json={})
    assert response.status == 409
    assert (await response.json())["error"] == \
        f"process {record['id']} has no lease; give 'seconds' to take one"
    response = await client.post(f"/processes/{record['id']}/lease", json={"seconds": 600})
    assert response.status == 200
    body = await response.json()
    assert body["lease"] == 600 and _epoch(body["leaseExpiresAt"]) > time.time() + 590
    assert (await get(client, record["id"]))["lease"] == 600   # saved
    response = await client.post(f"/processes/{record['id']}/lease", json={"seconds": 1})
    assert response.status == 200 and (await response.json())["lease"] == 1
    await _lapsed(client, record["id"], record["pid"])        # shortened: it lapses soon
    response = await client.post(f"/processes/{record['id']}/lease", json={})
    assert response.status == 409
    assert (await response.json())["error"].startswith(f"process {record['id']} is idle")


async def test_lease_input_is_checked(client: Any) -> None:
    for value in (0, 0.5, 86401, "10", True):
        response = await client.post("/processes", json={"argv": ["true"], "lease": value})
        assert response.status == 400, value
    record = await start(client, argv=["sleep", "300"], lease=60)
    for body in ({"seconds": 0}, {"seconds": "5"}, {"length": 5}):
        response = await client.post(f"/processes/{record['id']}/lease", json=body)
        assert response.status == 400, body
    assert (await client.post("/processes/999999/lease", json={})).status == 404
    assert (await client.post(f"/processes/{record['id']}/signals/kill", json={})).status == 200
    await wait_idle(client, record["id"])


async def test_a_queued_process_whose_lease_lapses_is_canceled(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    first = await start(client, argv=["sleep", "300"])
    queued = await start(client, argv=["sleep", "300"], lease=1)
    assert queued["state"] == "queued"
    final = await _lapsed(client, queued["id"], None)
    assert final["pid"] is None
    assert (await get(client, first["id"]))["state"] == "running"
    assert (await client.post(f"/processes/{first['id']}/signals/kill", json={})).status == 200
    await wait_idle(client, first["id"])
