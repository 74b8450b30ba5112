"""Seed 002 (psys): POST /api/connections/kill {pid} — SIGTERM only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import NO_SUCH_PID, record_of, start, wait_idle
from tests.helpers import alive, async_wait_for, start_ignoring_term


async def test_200_ok_and_the_record_is_canceled(client: Any) -> None:
    record = await start(client)
    response = await client.post("/api/connections/kill", json={"pid": record["pid"]})
    assert response.status == 200
    assert await response.json() == {"ok": True}
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled" and final["exitSignal"] == "SIGTERM"
    assert not alive(record["pid"])


async def test_pid_as_a_string_is_accepted(client: Any) -> None:
    record = await start(client)
    response = await client.post("/api/connections/kill", json={"pid": str(record["pid"])})
    assert response.status == 200 and await response.json() == {"ok": True}
    await wait_idle(client, record["id"])


async def test_sigterm_only_a_process_that_ignores_it_lives_on(client: Any) -> None:
    record = await start_ignoring_term(client, grace=0.1)
    control = await start_ignoring_term(client, grace=0.1)
    response = await client.post("/api/connections/kill", json={"pid": record["pid"]})
    assert response.status == 200 and await response.json() == {"ok": True}
    # The control, stopped after it with the same grace by a route that does escalate, is
    # SIGKILLed once its grace is over: by then psys would have escalated too, had it meant to.
    assert (await client.post(f"/processes/{control['id']}/signals/kill")).status == 200

    async def control_killed() -> bool:
        assert alive(record["pid"]), "psys escalated past SIGTERM"
        assert (await record_of(client, record["id"]))["state"] == "terminating"
        return bool((await record_of(client, control["id"]))["state"] == "idle")

    await async_wait_for(control_killed, what="the control to be killed after its grace")
    assert (await record_of(client, control["id"]))["exitSignal"] == "SIGKILL"
    assert alive(record["pid"])
    assert (await record_of(client, record["id"]))["state"] == "terminating"
    again = await client.post("/api/connections/kill", json={"pid": record["pid"]})
    assert again.status == 200
    assert (await client.delete(f"/api/v1/processes/{record['pid']}")).status == 204
    assert not alive(record["pid"])



@pytest.mark.parametrize("body", [{}, {"pid": 0}, {"pid": -5}, {"pid": 1.5}, {"pid": "abc"},
                                  {"pid": True}, {"pid": None}, {"pid": [1]}, {"pid": "12x"}])
async def test_400_invalid_pid(client: Any, body: dict[str, Any]) -> None:
    response = await client.post("/api/connections/kill", json=body)
    assert response.status == 400
    assert await response.json() == {"error": "Invalid pid"}


async def test_400_for_a_body_that_is_not_an_object(client: Any) -> None:
    for raw in (b"[1]", b"{oops", b""):
        response = await client.post("/api/connections/kill", data=raw,
                                     headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert await response.json() == {"error": "Invalid pid"}


async def test_403_for_a_process_we_did_not_start(client: Any, stranger: Any) -> None:
    response = await client.post("/api/connections/kill", json={"pid": stranger.pid})
    assert response.status == 403
    assert await response.json() == {"error": "Permission denied"}
    assert alive(stranger.pid)


async def test_404_when_no_such_process(client: Any) -> None:
    response = await client.post("/api/connections/kill", json={"pid": NO_SUCH_PID})
    assert response.status == 404
    assert await response.json() == {"error": "Process not found"}


async def test_404_for_an_exited_process_of_ours(client: Any) -> None:
    record = await start(client, ["true"])
    await wait_idle(client, record["id"])
    response = await client.post("/api/connections/kill", json={"pid": record["pid"]})
    assert response.status in (403, 404)  # 403 only if the pid was recycled meanwhile
    if response.status == 404:
        assert await response.json() == {"error": "Process not found"}


async def test_allow_unmanaged_sends_sigterm_to_a_stranger(make_daemon: Any, stranger: Any) -> None:
    client = await make_daemon(allow_unmanaged=True)
    response = await client.post("/api/connections/kill", json={"pid": stranger.pid})
    assert response.status == 200 and await response.json() == {"ok": True}
    assert stranger.wait(5) == -15
