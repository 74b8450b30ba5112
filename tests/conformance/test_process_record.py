"""The Cyrnel record everywhere Stablehand hands one out, checked against Cyrnel's Process
schema (seed 004's fragment) and Stablehand's own: every native route that returns a
record, the SSE events, the Python client and the CLI's ``--json``.

``ref`` is left out when none was given (Cyrnel: an optional non-empty string, not
nullable); ``exitState``, ``error`` and ``completedAt`` are always there, null until
known; ``stdin`` is ``"pipe"`` or null, never the string ``"null"``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from daemon.client import Client
from tests.conformance.contracts import assert_process_record


async def _json(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _sse_records(client: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` state events from the start of the ring (Last-Event-ID: 0)."""
    events: list[dict[str, Any]] = []
    async with client.get("/events", headers={"Last-Event-ID": "0"}) as response:
        assert response.status == 200
        while len(events) < count:
            line = await asyncio.wait_for(response.content.readline(), 10)
            assert line, "the event stream ended"
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    for event in events:
        assert event["state"] == event["record"]["state"]
        assert event["exitState"] == event["record"]["exitState"]
    return [event["record"] for event in events]


async def _cli_json(url: str, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", *args, "--json", "--url", url, "--token-file", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_every_record_follows_the_schemas(client: Any) -> None:
    seen: list[dict[str, Any]] = []
    piped = await _json(await client.post("/processes", json={"argv": ["cat"], "stdin": "pipe"}), 201)
    tagged = await _json(await client.post("/processes", json={"argv": ["sleep", "60"], "ref": "job-b"}), 201)
    assert "ref" not in piped and piped["stdin"] == "pipe"
    assert tagged["ref"] == "job-b" and tagged["stdin"] is None
    seen += [piped, tagged]

    seen.append(await _json(await client.get(f"/processes/{piped['id']}")))
    seen += (await _json(await client.get("/processes")))["processes"]
    seen.append(await _json(await client.post(f"/processes/{tagged['id']}/signal",
                                              json={"signal": "SIGCONT"})))
    seen.append(await _json(await client.post(f"/processes/{tagged['id']}/stop", json={"grace": 5})))
    assert (await client.post(f"/processes/{piped['id']}/stdin/close")).status == 204
    for record in (piped, tagged):
        idle = await _json(await client.get(f"/processes/{record['id']}/wait",
                                            params={"timeout": "20"}))
        assert idle["state"] == "idle" and idle["exitState"] and idle["completedAt"]
        seen.append(idle)

    # created (x2), tagged terminating, both idle: five committed changes.
    seen += await _sse_records(client, 5)

    url = str(client.make_url("")).rstrip("/")
    sync_client = Client(url=url, token_file="none")
    seen.append(await asyncio.to_thread(sync_client.get, piped["id"]))
    seen += (await asyncio.to_thread(sync_client.list))["processes"]
    seen.append(await _cli_json(url, "show", str(piped["id"])))
    seen += (await _cli_json(url, "ps"))["processes"]

    for record in seen:
        assert_process_record(record)
        assert ("ref" in record) == (record["id"] == tagged["id"]), record
        assert record["stdin"] == ("pipe" if record["id"] == piped["id"] else None), record
    assert len(seen) >= 17
