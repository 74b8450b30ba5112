"""Seed 004 (Cyrnel): POST /processes/{id}/signals/kill — the Process record and its codes."""

from __future__ import annotations

import re
from typing import Any

from tests.compat.conftest import start, wait_idle
from tests.helpers import alive, start_ignoring_term

# Cyrnel's required fields; `ref` is optional and never null (left out when not given).
CYRNEL_FIELDS = {"id", "state", "exitState", "error", "createdAt", "completedAt"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _assert_process(body: dict[str, Any]) -> None:
    assert CYRNEL_FIELDS <= set(body)
    assert "ref" not in body or (isinstance(body["ref"], str) and body["ref"])
    assert isinstance(body["id"], int) and body["id"] > 0
    assert body["state"] in ("queued", "running", "idle", "terminating")
    assert body["exitState"] in (None, "failed", "success", "timeout", "canceled")
    assert body["error"] is None or isinstance(body["error"], str)
    assert ISO.match(body["createdAt"])
    assert body["completedAt"] is None or ISO.match(body["completedAt"])


async def test_200_running_becomes_terminating(client: Any) -> None:
    record = await start(client, ref="agent-7")
    response = await client.post(f"/processes/{record['id']}/signals/kill", json={"anything": [1, 2]})
    assert response.status == 200
    body = await response.json()
    _assert_process(body)
    assert body["state"] == "terminating" and body["exitState"] is None and body["ref"] == "agent-7"
    final = await wait_idle(client, record["id"])
    _assert_process(final)
    assert final["exitState"] == "canceled" and final["completedAt"] is not None
    assert not alive(record["pid"])


async def test_200_no_body_counts_as_empty_object(client: Any) -> None:
    record = await start(client)
    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 200
    await wait_idle(client, record["id"])


async def test_200_queued_becomes_idle_canceled(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    first = await start(client)
    queued = await start(client)
    assert queued["state"] == "queued"
    response = await client.post(f"/processes/{queued['id']}/signals/kill", json={})
    assert response.status == 200
    body = await response.json()
    _assert_process(body)
    assert body["state"] == "idle" and body["exitState"] == "canceled" and body["completedAt"]
    await client.post(f"/processes/{first['id']}/signals/kill")
    await wait_idle(client, first["id"])


async def test_400_bad_id_or_body(client: Any) -> None:
    for path in ("/processes/abc/signals/kill", "/processes/0/signals/kill", "/processes/-3/signals/kill"):
        response = await client.post(path, json={})
        assert response.status == 400 and isinstance((await response.json())["error"], str)
    record = await start(client)
    response = await client.post(f"/processes/{record['id']}/signals/kill", json=[1])
    assert response.status == 400 and "JSON object" in (await response.json())["error"]
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_404_unknown(client: Any) -> None:
    response = await client.post("/processes/31337/signals/kill", json={})
    assert response.status == 404
    assert await response.json() == {"error": "process 31337 not found"}


async def test_409_idle_and_terminating(client: Any) -> None:
    record = await start_ignoring_term(client, grace=60)
    assert (await client.post(f"/processes/{record['id']}/signals/kill")).status == 200
    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 409
    assert await response.json() == {"error": f"process {record['id']} is already terminating"}
    await client.delete(f"/api/v1/processes/{record['pid']}")
    await wait_idle(client, record["id"])
    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 409
    assert await response.json() == {"error": f"process {record['id']} is already idle"}

