"""Tensorlake's process API on Stablehand's records: start, get, list, stdin, output, follow, run."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.helpers import alive, async_wait_for

TL_FIELDS = {"pid", "handle", "status", "exit_code", "signal", "stdin_writable", "command", "args",
             "started_at", "ended_at"}


def _assert_shape(body: dict[str, Any]) -> None:
    assert set(body) == TL_FIELDS
    assert isinstance(body["pid"], int) and isinstance(body["handle"], int)
    assert body["status"] in ("running", "exited", "signaled")
    now_ms = time.time() * 1000
    assert isinstance(body["started_at"], int) and abs(body["started_at"] - now_ms) < 120_000
    assert body["ended_at"] is None or isinstance(body["ended_at"], int)


async def _sse(response: Any) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


async def _tl_idle(client: Any, pid: int) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = await (await client.get(f"/api/v1/processes/{pid}")).json()
        return body if body["status"] != "running" else None
    return await async_wait_for(done)


async def test_start_get_list_and_kill(client: Any) -> None:
    response = await client.post("/api/v1/processes", json={"command": "sleep", "args": ["30"],
                                                            "env": {"A": "1"}, "working_dir": "/tmp"})
    assert response.status == 201
    body = await response.json()
    _assert_shape(body)
    assert body["status"] == "running" and body["command"] == "sleep" and body["args"] == ["30"]
    assert body["exit_code"] is None and body["signal"] is None and body["ended_at"] is None
    assert body["stdin_writable"] is False
    native = await (await client.get(f"/processes/{body['handle']}")).json()
    assert native["pid"] == body["pid"], "the same record underneath"
    got = await (await client.get(f"/api/v1/processes/{body['pid']}")).json()
    assert got == body
    listed = await (await client.get("/api/v1/processes")).json()
    assert body["pid"] in [p["pid"] for p in listed["processes"]]
    assert (await client.post(f"/api/v1/processes/{body['pid']}/signal", json={"signal": 9})).status == 200
    final = await _tl_idle(client, body["pid"])
    _assert_shape(final)
    assert final["status"] == "signaled" and final["signal"] == 9 and final["exit_code"] is None
    assert final["ended_at"] >= final["started_at"]


async def test_exited_status_and_errors(client: Any) -> None:
    body = await (await client.post("/api/v1/processes", json={"command": "sh", "args": ["-c", "exit 3"]})).json()
    final = await _tl_idle(client, body["pid"])
    assert final["status"] == "exited" and final["exit_code"] == 3 and final["signal"] is None
    response = await client.get("/api/v1/processes/999999")
    assert response.status == 404 and (await response.json())["code"] == "not_found"
    response = await client.post("/api/v1/processes", json={"args": []})
    assert response.status == 400 and set(await response.json()) == {"error", "code"}
    response = await client.post("/api/v1/processes", json={"command": "/no/such/thing"})
    assert response.status == 400 and (await response.json())["code"] == "spawn_failed"


async def test_stdin_pipe_and_output_lines(client: Any) -> None:
    body = await (await client.post("/api/v1/processes", json={"command": "cat", "stdin_mode": "pipe"})).json()
    assert body["stdin_writable"] is True
    assert (await client.post(f"/api/v1/processes/{body['pid']}/stdin", data=b"a\nb\n")).status == 204
    assert (await client.post(f"/api/v1/processes/{body['pid']}/stdin/close")).status == 204
    final = await _tl_idle(client, body["pid"])
    assert final["exit_code"] == 0 and final["stdin_writable"] is False
    out = await (await client.get(f"/api/v1/processes/{body['pid']}/stdout")).json()
    assert out == {"pid": body["pid"], "lines": ["a", "b"], "line_count": 2}
    response = await client.post(f"/api/v1/processes/{body['pid']}/stdin", data=b"x")
    assert response.status == 409 and (await response.json())["code"] == "stdin_not_writable"


async def test_discard_mode_and_merged_output(client: Any) -> None:
    body = await (await client.post("/api/v1/processes", json={
        "command": "sh", "args": ["-c", "echo out; echo err >&2"], "stdout_mode": "discard"})).json()
    await _tl_idle(client, body["pid"])
    assert (await (await client.get(f"/api/v1/processes/{body['pid']}/stdout")).json())["lines"] == []
    merged = await (await client.get(f"/api/v1/processes/{body['pid']}/output")).json()
    assert merged["lines"] == ["err"] and merged["line_count"] == 1


async def test_follow_sse_then_eof(client: Any) -> None:
    body = await (await client.post("/api/v1/processes", json={
        "command": "sh", "args": ["-c", "echo one; sleep 0.2; echo two >&2; printf three"]})).json()
    events = await asyncio.wait_for(_sse(await client.get(f"/api/v1/processes/{body['pid']}/output/follow")), 15)
    assert events[-1] == ("eof", {})
    outputs = [data for name, data in events if name == "output"]
    assert {(d["stream"], d["line"]) for d in outputs} == {("stdout", "one"), ("stderr", "two"),
                                                          ("stdout", "three")}
    assert all(isinstance(d["timestamp"], int) for d in outputs)


async def test_run_prints_both_streams_and_exits_3(client: Any) -> None:
    response = await client.post("/api/v1/processes/run", json={
        "command": "sh", "args": ["-c", "echo a; echo b >&2; echo c; printf tail; exit 3"]})
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    events = await asyncio.wait_for(_sse(response), 15)
    assert events[0][0] == "started"
    started = events[0][1]
    assert set(started) == {"handle", "pid", "started_at"} and isinstance(started["started_at"], int)
    outputs = [d for name, d in events if name == "output"]
    assert [d["line"] for d in outputs if d["stream"] == "stdout"] == ["a", "c", "tail"]
    assert [d["line"] for d in outputs if d["stream"] == "stderr"] == ["b"]
    assert events[-1] == ("exit", {"exit_code": 3, "signal": None, "reason": "exited"})
    record = await (await client.get(f"/processes/{started['handle']}")).json()
    assert record["exitState"] == "failed" and record["exitCode"] == 3


async def test_run_killed_by_its_timeout(client: Any) -> None:
    response = await client.post("/api/v1/processes/run", json={
        "command": "sh", "args": ["-c", "sleep 30 & sleep 30; wait"], "timeout": 0.5})
    events = await asyncio.wait_for(_sse(response), 15)
    assert events[-1] == ("exit", {"exit_code": None, "signal": 9, "reason": "timed_out"})
    record = await (await client.get(f"/processes/{events[0][1]['handle']}")).json()
    assert record["exitState"] == "timeout" and not alive(events[0][1]["pid"])


async def test_run_of_a_missing_program_ends_with_exit(client: Any) -> None:
    response = await client.post("/api/v1/processes/run", json={"command": "/no/such/program"})
    events = await asyncio.wait_for(_sse(response), 15)
    assert [name for name, _ in events] == ["started", "exit"]
    assert events[1][1]["reason"] == "failed" and "/no/such/program" in events[1][1]["error"]


async def test_run_whose_client_disconnects_is_stopped(client: Any) -> None:
    response = await client.post("/api/v1/processes/run", json={"command": "sleep", "args": ["30"]})
    first = await response.content.readline()
    assert first.startswith(b"event: started")
    started = json.loads((await response.content.readline()).decode()[6:])
    response.close()
    record = await async_wait_for(lambda: _idle(client, started["handle"]), what="the run to be stopped")
    assert record["exitState"] == "canceled" and not alive(started["pid"])


async def _idle(client: Any, process_id: int) -> dict[str, Any] | None:
    record = await (await client.get(f"/processes/{process_id}")).json()
    return record if record["state"] == "idle" else None


async def test_any_host_is_accepted_with_the_token(make_daemon: Any) -> None:
    """Tensorlake's SDK sends ``Host: <sandbox>.local`` and always a bearer token."""
    client = await make_daemon(token="sdk-token")
    headers = {"Host": "example-sandbox.sandbox.tensorlake.ai", "Authorization": "Bearer sdk-token"}
    response = await client.post("/api/v1/processes", json={"command": "true"}, headers=headers)
    assert response.status == 201
    body = await response.json()

    async def exited() -> bool:
        response = await client.get(f"/api/v1/processes/{body['pid']}", headers=headers)
        assert response.status == 200
        return bool((await response.json())["status"] == "exited")
    await async_wait_for(exited, what="the process to exit")
