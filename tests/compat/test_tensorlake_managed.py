"""Tensorlake's managed processes (its PR #730/#779) on Stablehand: start bodies as its SDKs
send them, ``ProcessInfo.managed`` as its Rust structs parse it, pid-or-name addressing,
restart, and kill for good.

The tensorlake SDK is not installed in the venv, so the bodies below are the ones its
clients send, byte for byte as the research notes (/work/notes/tensorlake_managed.md)
quote them, and every answer is checked field by field against its Rust serde types
(``_check_process_info``): what one of them would refuse, every SDK refuses.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.compat.test_tensorlake_process_api import _sse
from tests.conformance.contracts import STABLEHAND, call
from tests.helpers import alive, async_wait_for, free_port

FAST = {"initial_backoff_ms": 50, "max_backoff_ms": 200}
TOP = {"pid", "handle", "status", "exit_code", "signal", "stdin_writable", "command", "args",
       "started_at", "ended_at"}
MANAGED = {"id", "name", "status", "restart_count", "restart", "health_check", "health_status",
           "consecutive_health_failures", "last_exit", "last_error", "next_restart_at"}
HEALTH_DEFAULTS = {"initial_delay_ms": 5000, "interval_ms": 1000, "timeout_ms": 500, "failure_threshold": 3}


# --- the Rust SDK's types (crates/cloud-sdk/src/sandboxes/models.rs) ----------------------

def _int(value: Any, *, unsigned: bool = False, nullable: bool = False) -> bool:
    if value is None:
        return nullable
    return type(value) is int and (not unsigned or value >= 0)


def _check_process_info(body: dict[str, Any], *, managed: bool) -> dict[str, Any] | None:
    """``body`` parses as Tensorlake's ``ProcessInfo``; returns its ``managed`` (None if unmanaged)."""
    assert set(body) == TOP | ({"managed"} if managed else set()), body
    assert _int(body["pid"], unsigned=True), "pid is a required i64: never null"
    assert _int(body["handle"], nullable=True)
    assert body["status"] in ("running", "exited", "signaled", "oom_killed")
    assert _int(body["exit_code"], nullable=True) and _int(body["signal"], nullable=True)
    assert type(body["stdin_writable"]) is bool and isinstance(body["command"], str)
    assert isinstance(body["args"], list) and all(isinstance(a, str) for a in body["args"])
    now = time.time() * 1000
    assert _int(body["started_at"]) and abs(body["started_at"] - now) < 300_000, "ms since the epoch"
    assert _int(body["ended_at"], nullable=True)
    if not managed:
        return None
    info = body["managed"]
    assert set(info) == MANAGED, info
    assert isinstance(info["id"], str) and not info["id"].isdigit()
    assert info["name"] is None or isinstance(info["name"], str)
    assert info["status"] in ("starting", "running", "backing_off", "stopped")
    assert _int(info["restart_count"], unsigned=True)
    restart = info["restart"]
    assert set(restart) == {"policy", "max_restarts", "initial_backoff_ms", "max_backoff_ms"}
    assert restart["policy"] in ("never", "on_failure", "always")
    assert _int(restart["max_restarts"], unsigned=True, nullable=True)
    assert _int(restart["initial_backoff_ms"], unsigned=True) and _int(restart["max_backoff_ms"], unsigned=True)
    check = info["health_check"]
    if check is not None:
        assert set(check) == {"type", "port", "path", *HEALTH_DEFAULTS}
        assert check["type"] in ("http", "tcp") and _int(check["port"]) and 0 < check["port"] < 65536
        assert check["path"] is None or isinstance(check["path"], str)
        assert all(_int(check[k], unsigned=True) for k in HEALTH_DEFAULTS)
    assert info["health_status"] in ("disabled", "starting", "healthy", "unhealthy")
    assert _int(info["consecutive_health_failures"], unsigned=True)
    last = info["last_exit"]
    if last is not None:
        assert set(last) == {"exit_code", "signal", "oom_killed", "ended_at"}
        assert _int(last["exit_code"], nullable=True) and _int(last["signal"], nullable=True)
        assert type(last["oom_killed"]) is bool and _int(last["ended_at"])
    assert info["last_error"] is None or isinstance(info["last_error"], str)
    assert _int(info["next_restart_at"], nullable=True)
    return dict(info)


# --- helpers ---------------------------------------------------------------------------------

async def _start(client: Any, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/processes", json=body)
    answer = await response.json()
    assert response.status == status, answer
    return dict(answer)


async def _get(client: Any, ref: int | str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/processes/{_seg(ref)}")
    assert response.status == 200, await response.text()
    return dict(await response.json())


def _seg(ref: int | str) -> str:
    """A pid or a name as the SDKs put it in the path (``urlencoding::encode``)."""
    return str(ref) if isinstance(ref, int) else quote(ref, safe="")


async def _until(client: Any, ref: int | str, check: Any, what: str, timeout: float = 15) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await _get(client, ref)
        return body if check(body) else None
    result: dict[str, Any] = await async_wait_for(probe, timeout, what)
    return result


async def _error(response: Any, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error", "code"} and body["code"] == code, body
    return str(body["error"])


# --- start bodies ------------------------------------------------------------------------------

async def test_start_as_the_python_sdk_sends_it(client: Any) -> None:
    """Python: whole objects with its defaults (``model_dump(exclude_none=True)``: no
    ``max_restarts``, no ``path``), and ``user`` when the caller passes one."""
    port = free_port()
    body = await _start(client, command="sleep", args=["60"], user=pwd.getpwuid(os.geteuid()).pw_name,
                        name="web", restart={"policy": "on_failure", "initial_backoff_ms": 500,
                                             "max_backoff_ms": 30000},
                        health_check={"type": "tcp", "port": port, **HEALTH_DEFAULTS})
    managed = _check_process_info(body, managed=True)
    assert body["status"] == "running" and alive(body["pid"]) and body["command"] == "sleep"
    assert managed == {
        "id": "web", "name": "web", "status": "running", "restart_count": 0,
        "restart": {"policy": "on_failure", "max_restarts": None, "initial_backoff_ms": 500,
                    "max_backoff_ms": 30000},
        "health_check": {"type": "tcp", "port": port, "path": None, **HEALTH_DEFAULTS},
        "health_status": "starting", "consecutive_health_failures": 0, "last_exit": None,
        "last_error": None, "next_restart_at": None}
    assert await _get(client, "web") == body
    native = await (await client.get(f"/processes/{body['handle']}")).json()
    assert native["name"] == "web" and native["managed"]["restart"]["policy"] == "on_failure"
    assert (await client.delete("/api/v1/processes/web")).status == 204
    assert not alive(body["pid"])


async def test_start_as_typescript_sends_it(client: Any) -> None:
    """TypeScript (and the ``tl`` CLI): only the keys the caller set; the rest are defaults."""
    body = await _start(client, command="sleep", args=["60"], name="api",
                        restart={"policy": "always", "max_restarts": 10, "initial_backoff_ms": 250},
                        health_check={"type": "http", "port": 8080, "initial_delay_ms": 60000})
    managed = _check_process_info(body, managed=True)
    assert managed is not None
    assert managed["restart"] == {"policy": "always", "max_restarts": 10, "initial_backoff_ms": 250,
                                  "max_backoff_ms": 30000}
    assert managed["health_check"] == {"type": "http", "port": 8080, "path": "/",
                                       **HEALTH_DEFAULTS, "initial_delay_ms": 60000}
    assert managed["health_status"] == "starting"
    assert (await client.delete("/api/v1/processes/api")).status == 204


async def test_each_field_alone_makes_a_managed_process_and_nulls_are_defaults(client: Any) -> None:
    named = await _start(client, command="sleep", args=["60"], name="only-a-name")
    info = _check_process_info(named, managed=True)
    assert info is not None and info["restart"]["policy"] == "never"   # a name alone: no restarts
    assert info["health_check"] is None and info["health_status"] == "disabled"
    unnamed = await _start(client, command="sleep", args=["60"],
                           restart={"policy": "on_failure", "max_restarts": None, "max_backoff_ms": None},
                           health_check=None, name=None)
    info = _check_process_info(unnamed, managed=True)
    assert info is not None and info["name"] is None and info["id"] == f"handle-{unnamed['handle']}"
    assert info["restart"] == {"policy": "on_failure", "max_restarts": None, "initial_backoff_ms": 500,
                               "max_backoff_ms": 30000}
    checked = await _start(client, command="sleep", args=["60"],
                           health_check={"type": "http", "port": 1, "path": None, "initial_delay_ms": 60000})
    info = _check_process_info(checked, managed=True)
    assert info is not None and info["health_check"]["path"] == "/" and info["restart"]["policy"] == "never"
    plain = await _start(client, command="sleep", args=["60"], name=None, restart=None, health_check=None)
    _check_process_info(plain, managed=False)
    for record in (named, unnamed, checked, plain):
        assert (await client.delete(f"/api/v1/processes/{record['pid']}")).status == 204


TENSORLAKE_NAME_ERRORS = [
    ("", "managed process name must not be empty"),
    ("a/b", "managed process name must not contain '/'"),
    ("123", "managed process name must not be all digits; numeric strings are reserved for PID addressing"),
]


@pytest.mark.parametrize(("name", "message"), TENSORLAKE_NAME_ERRORS)
async def test_tensorlake_name_rule_with_its_messages(client: Any, name: str, message: str) -> None:
    response = await client.post("/api/v1/processes", json={"command": "true", "name": name})
    assert await _error(response, 400, "invalid_request") == message


@pytest.mark.parametrize("fields", [
    {"name": 5}, {"name": "x" * 129}, {"name": "tab\there"},
    {"restart": "always"}, {"restart": {"policy": "sometimes"}}, {"restart": {"policy": "on-failure"}},
    {"restart": {"initial_backoff_ms": -1}}, {"restart": {"initial_backoff_ms": 1.5}},
    {"restart": {"max_restarts": -1}}, {"restart": {"max_restarts": True}}, {"restart": {"bogus": 1}},
    {"restart": {"max_restarts": 2**32}},   # past Tensorlake's u32 (and our 10**9)
    {"restart": {"initial_backoff_ms": 10**15, "max_backoff_ms": 10**15}},   # a restart in year 33715
    {"health_check": {"type": "exec", "command": ["true"]}}, {"health_check": {"type": "http"}},
    {"health_check": {"port": 80}}, {"health_check": {"type": "tcp", "port": 70000}},
    {"health_check": {"type": "tcp", "port": 0}}, {"health_check": {"type": "http", "port": 80, "path": "x"}},
    {"health_check": {"type": "http", "port": 80, "interval_ms": "1s"}},
    {"health_check": {"type": "http", "port": 80, "failure_threshold": 0}},
    {"health_check": {"type": "http", "port": 80, "ready": True}},
    {"healthCheck": {"type": "http", "port": 80}}, {"ready": {"port": 80}},
    {"user": 0}, {"user": ""},
])
async def test_bad_managed_fields_are_400_invalid_request(client: Any, fields: dict[str, Any]) -> None:
    response = await client.post("/api/v1/processes", json={"command": "sleep", "args": ["60"], **fields})
    await _error(response, 400, "invalid_request")
    assert (await (await client.get("/api/v1/processes")).json())["processes"] == []


async def test_user_is_the_daemons_own_or_null(client: Any) -> None:
    for user in (None, str(os.geteuid()), pwd.getpwuid(os.geteuid()).pw_name):
        body = await _start(client, command="true", user=user)
        _check_process_info(body, managed=False)
    for path in ("/api/v1/processes", "/api/v1/processes/run"):   # never another user
        response = await client.post(path, json={"command": "true", "user": "someone-else-entirely"})
        assert "switching to another user is not supported" in await _error(response, 403, "forbidden")
    assert len((await (await client.get("/api/v1/processes")).json())["processes"]) == 3, "none started"
    response = await client.post("/api/v1/processes/run", json={"command": "true", "name": "x"})
    await _error(response, 400, "invalid_request")   # a run is never managed


# --- ProcessInfo --------------------------------------------------------------------------------

async def test_unmanaged_process_has_no_managed_key_and_cannot_be_restarted(client: Any) -> None:
    body = await _start(client, command="sleep", args=["60"])
    _check_process_info(body, managed=False)
    listed = (await (await client.get("/api/v1/processes")).json())["processes"]
    assert [_check_process_info(p, managed=False) for p in listed] == [None]
    response = await client.post(f"/api/v1/processes/{body['pid']}/restart", data=b"")
    await _error(response, 409, "not_managed")
    assert (await _get(client, body["pid"]))["pid"] == body["pid"] and alive(body["pid"])
    assert (await client.delete(f"/api/v1/processes/{body['pid']}")).status == 204


async def test_a_queued_process_has_pid_0_never_null(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=1)
    first = await _start(client, command="sleep", args=["60"])
    queued = await _start(client, command="sleep", args=["60"], name="waiting")
    info = _check_process_info(queued, managed=True)
    assert queued["pid"] == 0 and queued["status"] == "running" and info is not None
    assert info["status"] == "starting"
    assert await _get(client, "waiting") == queued
    listed = (await (await client.get("/api/v1/processes")).json())["processes"]
    assert [p["pid"] for p in listed] == [0, first["pid"]]
    await _error(await client.get("/api/v1/processes/0"), 404, "not_found")
    response = await client.post("/api/v1/processes/waiting/restart", data=b"")
    await _error(response, 409, "not_running")
    assert (await client.delete("/api/v1/processes/waiting")).status == 204   # a queued one: for good
    stopped = await _get(client, "waiting")
    assert stopped["pid"] == 0 and stopped["managed"]["status"] == "stopped"
    assert (await client.delete(f"/api/v1/processes/{first['pid']}")).status == 204


async def test_backing_off_shows_the_run_that_ended_and_delete_stops_it_for_good(client: Any) -> None:
    body = await _start(client, command="sh", args=["-c", "exit 7"], name="flaky",
                        restart={"policy": "always", "initial_backoff_ms": 60000, "max_backoff_ms": 60000})
    waiting = await _until(client, "flaky", lambda b: b["managed"]["status"] == "backing_off", "backoff")
    info = _check_process_info(waiting, managed=True)
    assert info is not None
    assert (waiting["status"], waiting["exit_code"], waiting["signal"]) == ("exited", 7, None)
    assert waiting["pid"] == body["pid"] and waiting["ended_at"] == info["last_exit"]["ended_at"]
    assert info["last_exit"]["exit_code"] == 7 and info["last_exit"]["oom_killed"] is False
    assert info["restart_count"] == 0 and info["last_error"] == "exited with status 7"
    assert info["next_restart_at"] - time.time() * 1000 > 30_000
    assert (await client.delete("/api/v1/processes/flaky")).status == 204
    final = await _get(client, "flaky")
    info = _check_process_info(final, managed=True)
    assert info is not None and info["status"] == "stopped" and info["next_restart_at"] is None
    record = await (await client.get(f"/processes/{body['handle']}")).json()
    assert record["state"] == "idle" and record["exitState"] == "canceled"
    await _error(await client.delete("/api/v1/processes/flaky"), 404, "not_found")


# --- restart, and pids across runs ------------------------------------------------------------

async def test_restart_by_name_and_by_pid_and_every_runs_pid_resolves(client: Any) -> None:
    first = await _start(client, command="sleep", args=["60"], name="svc",
                         restart={"policy": "always", **FAST})
    response = await client.post("/api/v1/processes/svc/restart", data=b"")   # Content-Length: 0
    assert response.status == 200, await response.text()
    second = await response.json()
    info = _check_process_info(second, managed=True)
    assert info is not None and info["id"] == "svc" and info["restart_count"] == 1
    assert second["handle"] == first["handle"] and second["pid"] != first["pid"]
    assert second["status"] == "running" and alive(second["pid"]) and not alive(first["pid"])
    assert info["last_exit"]["signal"] == 15 and info["last_exit"]["exit_code"] is None
    response = await client.post(f"/api/v1/processes/{second['pid']}/restart")
    assert response.status == 200
    third = await response.json()
    assert third["managed"]["restart_count"] == 2 and third["pid"] not in (first["pid"], second["pid"])
    for pid in (first["pid"], second["pid"], third["pid"]):   # an earlier run's pid finds the record
        got = await _get(client, pid)
        assert (got["handle"], got["pid"]) == (third["handle"], third["pid"])
    listed = (await (await client.get("/api/v1/processes")).json())["processes"]
    assert [p["handle"] for p in listed] == [first["handle"]]   # one entry per managed process
    assert (await client.delete(f"/api/v1/processes/{first['pid']}")).status == 204   # by an old pid
    assert not alive(third["pid"])
    response = await client.post("/api/v1/processes/svc/restart", data=b"")
    await _error(response, 409, "not_running")


async def test_restart_during_backoff_starts_the_next_run_now(client: Any) -> None:
    await _start(client, command="sh", args=["-c", "exit 1"], name="slow",
                 restart={"policy": "on_failure", "initial_backoff_ms": 60000, "max_backoff_ms": 60000})
    await _until(client, "slow", lambda b: b["managed"]["status"] == "backing_off", "backoff")
    response = await client.post("/api/v1/processes/slow/restart", data=b"")
    assert response.status == 200
    assert (await response.json())["managed"]["restart_count"] == 1
    assert (await client.delete("/api/v1/processes/slow")).status in (204, 404)   # it may be backing off


async def test_crash_loop_counts_restarts_until_max(client: Any) -> None:
    body = await _start(client, command="sh", args=["-c", "exit 3"], name="crashy",
                        restart={"policy": "on_failure", "max_restarts": 2, **FAST})
    final = await _until(client, "crashy", lambda b: b["managed"]["status"] == "stopped", "the last run")
    info = _check_process_info(final, managed=True)
    assert info is not None and info["restart_count"] == 2
    assert (final["status"], final["exit_code"]) == ("exited", 3)
    assert final["pid"] != body["pid"] and info["last_exit"]["exit_code"] == 3
    assert "gave up after 2 restarts" in info["last_error"]


async def test_unhealthy_process_is_restarted_and_shows_its_health(client: Any) -> None:
    port = free_port()   # nothing listens on it: every probe fails
    body = await _start(client, command="sleep", args=["60"], name="sick",
                        restart={"policy": "on_failure", **FAST},
                        health_check={"type": "tcp", "port": port, "initial_delay_ms": 0,
                                      "interval_ms": 50, "timeout_ms": 100, "failure_threshold": 2})
    restarted = await _until(client, "sick", lambda b: b["managed"]["restart_count"] >= 1, "a restart")
    info = _check_process_info(restarted, managed=True)
    assert info is not None and not alive(body["pid"]) and "health" in (info["last_error"] or "")
    assert info["last_exit"] is not None
    assert (await client.delete("/api/v1/processes/sick")).status == 204


async def test_a_healthy_http_check(client: Any) -> None:
    port = free_port()
    await _start(client, command="python3", args=["-m", "http.server", str(port), "--bind", "127.0.0.1"],
                 name="served", health_check={"type": "http", "port": port, "initial_delay_ms": 0,
                                              "interval_ms": 50, "failure_threshold": 200})
    healthy = await _until(client, "served", lambda b: b["managed"]["health_status"] == "healthy", "healthy")
    info = _check_process_info(healthy, managed=True)
    assert info is not None and info["consecutive_health_failures"] == 0 and info["status"] == "running"
    assert (await client.delete("/api/v1/processes/served")).status == 204


# --- every route by name ------------------------------------------------------------------------

async def test_stdin_output_and_follow_by_name(client: Any) -> None:
    name = "cat ü 1"   # a space and a non-ASCII letter, percent-encoded as the SDKs do
    body = await _start(client, command="cat", stdin_mode="pipe", name=name)
    assert body["stdin_writable"] is True and body["managed"]["name"] == name
    seg = _seg(name)
    assert seg == "cat%20%C3%BC%201"
    follow = asyncio.ensure_future(_sse(await client.get(f"/api/v1/processes/{seg}/stdout/follow")))
    assert (await client.post(f"/api/v1/processes/{seg}/stdin", data=b"a\nb\n")).status == 204
    out = await async_wait_for(lambda: _lines(client, seg, "stdout", 2), what="two lines")
    assert out == {"pid": body["pid"], "lines": ["a", "b"], "line_count": 2}
    assert (await client.post(f"/api/v1/processes/{seg}/stdin/close", data=b"")).status == 204
    events = await asyncio.wait_for(follow, 15)   # cat exits, and with no restart policy, stays ended
    assert [d["line"] for n, d in events if n == "output"] == ["a", "b"] and events[-1] == ("eof", {})
    merged = await (await client.get(f"/api/v1/processes/{seg}/output")).json()
    assert merged["lines"] == ["a", "b"]
    final = await _get(client, name)
    assert (final["status"], final["exit_code"], final["managed"]["status"]) == ("exited", 0, "stopped")


async def _lines(client: Any, seg: str, stream: str, count: int) -> dict[str, Any] | None:
    body = await (await client.get(f"/api/v1/processes/{seg}/{stream}")).json()
    return dict(body) if len(body["lines"]) >= count else None


async def test_signal_and_kill_by_name(client: Any) -> None:
    signalled = await _start(client, command="sleep", args=["60"], name="sig")
    response = await client.post("/api/v1/processes/sig/signal", json={"signal": 15})
    assert response.status == 200 and await response.json() == {"success": True}
    final = await _until(client, "sig", lambda b: b["status"] != "running", "the exit")
    assert (final["status"], final["signal"], final["managed"]["status"]) == ("signaled", 15, "stopped")
    response = await client.post("/api/v1/processes/sig/signal", json={"signal": 15})
    await _error(response, 400, "not_running")
    doomed = await _start(client, command="sleep", args=["60"], name="doomed",
                          restart={"policy": "always", **FAST})
    assert (await client.delete("/api/v1/processes/doomed")).status == 204
    assert not alive(doomed["pid"]) and not alive(signalled["pid"])
    killed = await _get(client, "doomed")
    assert (killed["status"], killed["signal"], killed["managed"]["status"]) == ("signaled", 9, "stopped")
    record = await (await client.get(f"/processes/{doomed['handle']}")).json()
    assert record["state"] == "idle", "killed for good: no next run"


async def test_a_name_conflict_then_the_name_is_freed(client: Any) -> None:
    first = await _start(client, command="sleep", args=["60"], name="dup")
    response = await client.post("/api/v1/processes", json={"command": "sleep", "args": ["60"], "name": "dup"})
    await _error(response, 409, "name_conflict")
    assert (await client.delete("/api/v1/processes/dup")).status == 204
    second = await _start(client, command="sleep", args=["60"], name="dup")
    assert second["handle"] != first["handle"]
    assert (await _get(client, "dup"))["handle"] == second["handle"]   # the newest holder
    assert (await client.delete("/api/v1/processes/dup")).status == 204


@pytest.mark.parametrize(("method", "suffix"), [
    ("GET", ""), ("DELETE", ""), ("POST", "/restart"), ("POST", "/signal"), ("POST", "/stdin"),
    ("POST", "/stdin/close"), ("GET", "/stdout"), ("GET", "/output"), ("GET", "/stderr/follow")])
async def test_unknown_names_are_404_and_unusable_ones_400(client: Any, method: str, suffix: str) -> None:
    kwargs: dict[str, Any] = {"json": {"signal": 15}} if suffix == "/signal" else {}
    for seg in ("nobody", "-5", "web%201", "run"):
        response = await client.request(method, f"/api/v1/processes/{seg}{suffix}", **kwargs)
        await _error(response, 404, "not_found")
    for seg in ("%FF", "%ED%A0%80", "%00", "1%00", "a%01b", "x" * 129):
        response = await client.request(method, f"/api/v1/processes/{seg}{suffix}", **kwargs)
        await _error(response, 400, "invalid_name")
    response = await client.request(method, f"/api/v1/processes/{'9' * 11}{suffix}", **kwargs)
    await _error(response, 400, "invalid_pid")


async def test_answers_conform_to_stablehands_openapi_document(client: Any) -> None:
    """Every managed answer is what daemon/http/openapi.yaml says (openapi-core, as in
    tests/conformance): the start, get by name and by pid, list, restart and its 409s."""
    started = await call(client, "POST", "/api/v1/processes", json_body={
        "command": "sleep", "args": ["60"], "name": "doc", "restart": {"policy": "always", **FAST},
        "health_check": {"type": "http", "port": 8080, "initial_delay_ms": 60000}})
    assert started.status == 201
    STABLEHAND.validate(started, "/api/v1/processes")
    pid = started.json()["pid"]
    for path in ("/api/v1/processes/doc", f"/api/v1/processes/{pid}"):
        STABLEHAND.validate(await call(client, "GET", path), "/api/v1/processes/{pid}")
    restarted = await call(client, "POST", "/api/v1/processes/doc/restart")
    assert restarted.status == 200
    STABLEHAND.validate(restarted, "/api/v1/processes/{pid}/restart")
    STABLEHAND.validate(await call(client, "GET", "/api/v1/processes"), "/api/v1/processes")
    conflict = await call(client, "POST", "/api/v1/processes", json_body={"command": "true", "name": "doc"})
    assert conflict.status == 409
    STABLEHAND.validate(conflict, "/api/v1/processes")
    plain = await _start(client, command="sleep", args=["60"])
    not_managed = await call(client, "POST", f"/api/v1/processes/{plain['pid']}/restart")
    assert not_managed.status == 409
    STABLEHAND.validate(not_managed, "/api/v1/processes/{pid}/restart")
    output = await call(client, "GET", "/api/v1/processes/doc/output")
    STABLEHAND.validate(output, "/api/v1/processes/{pid}/output")
    for path in ("/api/v1/processes/doc", f"/api/v1/processes/{plain['pid']}"):
        answer = await call(client, "DELETE", path)
        assert answer.status == 204
        STABLEHAND.validate(answer, "/api/v1/processes/{pid}")
    stopped = await call(client, "GET", "/api/v1/processes/doc")
    assert stopped.json()["managed"]["status"] == "stopped"
    STABLEHAND.validate(stopped, "/api/v1/processes/{pid}")
    gone = await call(client, "POST", "/api/v1/processes/doc/restart")
    assert gone.status == 409
    STABLEHAND.validate(gone, "/api/v1/processes/{pid}/restart")
