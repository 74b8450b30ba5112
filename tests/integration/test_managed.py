"""Managed processes through the native API: restarts with backoff, runs, names, health, readiness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.model import iso_to_epoch
from tests.helpers import async_wait_for, free_port, printed
from tests.integration.test_processes import get, start, wait_idle

FAST = {"initialBackoffMs": 100, "maxBackoffMs": 400}


async def runs(client: Any, ref: int | str) -> list[dict[str, Any]]:
    response = await client.get(f"/processes/{ref}/runs")
    assert response.status == 200, await response.text()
    return list((await response.json())["runs"])


def _run_number(client: Any, ref: int | str, at_least: int) -> Any:
    async def check() -> bool:
        return int((await get(client, ref))["managed"]["run"]) >= at_least   # type: ignore[arg-type]
    return check


async def test_a_failing_process_is_restarted_with_backoff_until_max_restarts(client: Any) -> None:
    record = await start(client, argv=["sh", "-c", "exit 1"],
                         restart={"policy": "on_failure", "maxRestarts": 3, **FAST})
    assert record["managed"]["status"] in ("running", "backing_off")   # sh may be gone already
    final = await wait_idle(client, record["id"], timeout=20)
    assert (final["exitState"], final["exitCode"]) == ("failed", 1)
    assert final["error"] == "exited with status 1; gave up after 3 restarts"
    assert final["managed"]["restartCount"] == 3 and final["managed"]["status"] == "stopped"
    assert final["managed"]["lastExit"]["exitCode"] == 1
    history = await runs(client, record["id"])
    assert [r["run"] for r in history] == [1, 2, 3, 4]
    assert all(r["reason"] == "exited" and r["exitCode"] == 1 for r in history)
    gaps = [iso_to_epoch(b["startedAt"]) - iso_to_epoch(a["endedAt"])   # type: ignore[operator]
            for a, b in zip(history, history[1:], strict=False)]
    for gap, backoff in zip(gaps, (0.1, 0.2, 0.4), strict=True):     # doubling, capped at 0.4
        assert gap >= backoff - 0.002, (gaps, "a restart came before its backoff")


async def test_always_restarts_after_a_clean_exit_and_never_does_not(client: Any) -> None:
    always = await start(client, argv=["true"], restart={"policy": "always", "maxRestarts": 2, **FAST})
    final = await wait_idle(client, always["id"], timeout=20)
    assert final["exitState"] == "success" and final["managed"]["restartCount"] == 2
    assert len(await runs(client, always["id"])) == 3
    never = await start(client, argv=["sh", "-c", "exit 4"], name="once", restart={"policy": "never"})
    final = await wait_idle(client, never["id"])
    assert (final["exitState"], final["exitCode"], final["managed"]["restartCount"]) == ("failed", 4, 0)
    assert len(await runs(client, "once")) == 1


async def test_a_kill_during_backoff_ends_it_for_good(client: Any) -> None:
    record = await start(client, argv=["sh", "-c", "exit 1"], name="flaky",
                         restart={"policy": "always", "initialBackoffMs": 60_000, "maxBackoffMs": 60_000})

    async def backing_off() -> bool:
        return (await get(client, record["id"]))["managed"]["status"] == "backing_off"
    await async_wait_for(backing_off, what="the first run to end")
    assert (await get(client, "flaky"))["managed"]["nextRestartAt"] is not None
    response = await client.post("/processes/flaky/signals/kill")
    assert response.status == 200
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled" and final["managed"]["status"] == "stopped"
    assert len(await runs(client, record["id"])) == 1


async def test_restart_by_name_starts_a_new_run_at_once(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"], name="svc", restart={"policy": "always"})
    response = await client.post("/processes/svc/restart")
    assert response.status == 200, await response.text()
    after = await response.json()
    assert after["id"] == record["id"] and after["pid"] != record["pid"]
    assert after["managed"]["run"] == 2 and after["managed"]["restartCount"] == 1
    history = await runs(client, "svc")
    assert history[0]["reason"] == "restarted" and history[1]["endedAt"] is None
    await client.post(f"/processes/{record['id']}/signals/kill")
    assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"


async def test_names_are_unique_among_live_processes_and_address_the_newest(client: Any) -> None:
    first = await start(client, argv=["sleep", "300"], name="web")
    response = await client.post("/processes", json={"argv": ["true"], "name": "web"})
    assert response.status == 409 and "web" in (await response.json())["error"]
    for bad in ("123", "a/b", "", "x" * 129, "tab\there"):
        response = await client.post("/processes", json={"argv": ["true"], "name": bad})
        assert response.status == 400, bad
    assert (await get(client, "web"))["id"] == first["id"]
    await client.post("/processes/web/signals/kill")
    await wait_idle(client, first["id"])
    second = await start(client, argv=["true"], name="web")     # the name is free again
    await wait_idle(client, second["id"])
    assert (await get(client, "web"))["id"] == second["id"]
    listed = await (await client.get("/processes", params={"name": "web"})).json()
    assert [p["id"] for p in listed["processes"]] == [second["id"], first["id"]]
    assert (await client.get("/processes/nobody")).status == 404
    response = await client.post(f"/processes/{second['id']}/restart")
    assert response.status == 409


_SERVER = """
import http.server, os, sys
flag = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if os.path.exists(flag) else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("serving", flush=True)
server.serve_forever()
"""


async def test_a_failing_health_check_restarts_the_run(client: Any, tmp_path: Path) -> None:
    port, flag = free_port(), tmp_path / "sick"
    record = await start(client, argv=["python3", "-c", _SERVER, str(port), str(flag)], name="api",
                         restart={"policy": "on_failure", **FAST},
                         healthCheck={"type": "http", "port": port, "path": "/healthz",
                                      "initialDelayMs": 1000, "intervalMs": 50, "timeoutMs": 500,
                                      "failureThreshold": 2})   # the delay: python's start-up

    async def healthy() -> bool:
        return (await get(client, "api"))["managed"]["healthStatus"] == "healthy"
    await async_wait_for(healthy, what="the first health check to pass")
    flag.touch()
    await async_wait_for(_run_number(client, "api", 2), 20, "the unhealthy run to be replaced")
    flag.unlink()
    await async_wait_for(healthy, what="the new run to be healthy")
    history = await runs(client, "api")
    assert history[0]["reason"] == "unhealthy"
    assert (await get(client, "api"))["managed"]["restartCount"] >= 1
    await client.post("/processes/api/signals/kill")
    await wait_idle(client, record["id"])


async def test_tcp_and_exec_checks(client: Any, tmp_path: Path) -> None:
    port, flag = free_port(), tmp_path / "sick"
    tcp = await start(client, argv=["python3", "-c", _SERVER, str(port), str(flag)],
                      healthCheck={"type": "tcp", "port": port, "initialDelayMs": 1000,
                                   "intervalMs": 50, "failureThreshold": 5})
    ok = tmp_path / "ok"
    ok.touch()
    exec_ = await start(client, argv=["sleep", "300"], restart={"policy": "on_failure", **FAST},
                        healthCheck={"type": "exec", "command": ["test", "-e", str(ok)],
                                     "initialDelayMs": 0, "intervalMs": 50, "failureThreshold": 1})
    for record in (tcp, exec_):
        async def healthy(record: dict[str, Any] = record) -> bool:
            return (await get(client, record["id"]))["managed"]["healthStatus"] == "healthy"
        await async_wait_for(healthy, what="a passing check")
    ok.unlink()
    await async_wait_for(_run_number(client, exec_["id"], 2), 20, "the exec check to fail")
    for record in (tcp, exec_):
        await client.post(f"/processes/{record['id']}/signals/kill")
        await wait_idle(client, record["id"])


async def test_readiness_by_log_line_and_by_port(client: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    logged = await start(client, command=f"until [ -e {go} ]; do sleep 0.02; done; echo 'now ready'; "
                                         "exec sleep 300", ready={"logLine": "^now ready$"})
    assert logged["managed"]["status"] == "starting"
    port = free_port()
    served = await start(client, argv=["python3", "-c", _SERVER, str(port), str(tmp_path / "no")],
                         ready={"port": port})
    go.touch()
    for record in (logged, served):
        async def running(record: dict[str, Any] = record) -> bool:
            return (await get(client, record["id"]))["managed"]["status"] == "running"
        await async_wait_for(running, what="the ready condition")
    assert await printed(client, logged["id"], "now ready")
    for record in (logged, served):
        await client.post(f"/processes/{record['id']}/signals/kill")
        await wait_idle(client, record["id"])


async def test_bad_managed_fields_are_400s_naming_the_field(client: Any) -> None:
    for body, word in (({"restart": {"policy": "sometimes"}}, "restart.policy"),
                       ({"restart": {"maxRestarts": -1}}, "restart.maxRestarts"),
                       ({"healthCheck": {"type": "http"}}, "healthCheck.port"),
                       ({"healthCheck": {"type": "udp", "port": 1}}, "healthCheck.type"),
                       ({"ready": {"port": 1, "logLine": "x"}}, "ready"),
                       ({"ready": {"logLine": "("}}, "ready.logLine"),
                       ({"restart": {"policy": "always", "surprise": 1}}, "restart.surprise")):
        response = await client.post("/processes", json={"argv": ["true"], **body})
        assert response.status == 400, body
        assert word in (await response.json())["error"], body
