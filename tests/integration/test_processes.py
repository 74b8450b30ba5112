"""The native API with real children: lifecycle, exits, trees, timeouts, the queue."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import psutil

from tests.helpers import (
    alive,
    async_wait_for,
    descendants_of,
    marked_processes,
    printed,
    start_ignoring_term,
)


async def start(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/processes", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def get(client: Any, process_id: int) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}")
    assert response.status == 200
    return await response.json()


async def wait_idle(client: Any, process_id: int, timeout: float = 15) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}/wait", params={"timeout": str(timeout)})
    assert response.status == 200, await response.text()
    record = await response.json()
    assert record["state"] == "idle"
    return record


async def test_start_kill_sleep(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"], ref="job-1")
    assert record["state"] == "running"
    assert record["id"] >= 1 and record["ref"] == "job-1"
    pid = record["pid"]
    assert alive(pid)
    assert os.getsid(pid) == pid, "the child leads its own session"
    assert record["createdAt"].endswith("Z") and record["startedAt"].endswith("Z")
    assert record["exitState"] is None and record["completedAt"] is None

    response = await client.post(f"/processes/{record['id']}/signals/kill", json={"reason": "x"})
    assert response.status == 200
    killed = await response.json()
    assert killed["state"] == "terminating" and killed["id"] == record["id"]

    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled"
    assert final["exitSignal"] == "SIGTERM"
    assert final["completedAt"] is not None
    assert not alive(pid)
    row = await client.registry.get(record["id"])
    assert row.state.value == "idle" and row.exit_state.value == "canceled"


async def test_sigterm_ignoring_child_is_sigkilled_after_grace(client: Any) -> None:
    record = await start_ignoring_term(client, grace=0.3)
    await client.post(f"/processes/{record['id']}/signals/kill")
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled"
    assert final["exitSignal"] == "SIGKILL"
    assert not alive(record["pid"])



async def test_grandchildren_leave_nothing_behind(client: Any) -> None:
    record = await start(client, command="sleep 300 & sleep 300 & wait")
    await async_wait_for(lambda: _count(record["pid"], 2), what="two grandchildren")
    tree = descendants_of(record["pid"])
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])
    for pid in [record["pid"], *tree]:
        assert not alive(pid)


async def _count(pid: int, n: int) -> bool:
    return len(descendants_of(pid)) >= n


async def test_setsid_descendant_is_stopped_too(client: Any) -> None:
    record = await start(client, command="setsid sleep 301 & sleep 300 & wait")
    await async_wait_for(lambda: _left_session(record["pid"]), what="a grandchild in its own session")
    await async_wait_for(lambda: _count(record["pid"], 2), what="grandchildren")
    tree = descendants_of(record["pid"])
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])
    for pid in tree:
        assert not alive(pid)
    assert marked_processes(record["id"], client.supervisor._instance) == []


async def _left_session(pid: int) -> bool:
    for child in descendants_of(pid):
        try:
            if os.getsid(child) == child and psutil.Process(child).name() == "sleep":
                return True
        except (OSError, psutil.Error):
            pass
    return False


async def test_double_forked_escapee_is_found_by_its_marker(client: Any) -> None:
    # The subshell exits at once, so the setsid'd sleep is orphaned before the kill.
    record = await start(client, command="(setsid sleep 302 &) ; sleep 300")
    instance = client.supervisor._instance
    await async_wait_for(lambda: _marked(record["id"], instance, 3), what="escapee running")
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])
    assert marked_processes(record["id"], instance) == []


async def test_process_orphaned_during_the_stop_is_stopped_too(client: Any) -> None:
    # On SIGTERM the leader starts a new session and exits: that process never got
    # the first signal and is re-parented to the daemon only once the stop is under way.
    # It may still be inside execve when the daemon looks at it (its environment then
    # reads as empty); a chain of wrappers (one execve each) and several stops at once
    # make that window likely to be hit.
    wrappers = "env " * 8
    script = (f"trap 'setsid {wrappers}sleep 303 & exit 0' TERM; echo ready; "
              "while :; do sleep 0.05; done")
    # A forked shell swallows a TERM that lands before it execs (dash's trap is still
    # installed), so some stops end in SIGKILL after the grace: keep it short.
    records = [await start(client, command=script, grace=0.3) for _ in range(6)]
    for record in records:
        await async_wait_for(lambda record=record: printed(client, record["id"], "ready"), what="trap in place")
    instance = client.supervisor._instance
    kills = [client.post(f"/processes/{record['id']}/signals/kill") for record in records]
    assert [response.status for response in await asyncio.gather(*kills)] == [200] * 6
    for record in records:
        final = await wait_idle(client, record["id"])
        assert final["exitState"] == "canceled"
        assert marked_processes(record["id"], instance) == []


async def test_orphan_unreadable_for_a_moment_is_waited_for_and_stopped(client: Any) -> None:
    # A slow execve, drawn out: the orphan shows an empty environment for 20 ms, then
    # carries the record's marker. The leader exits only once the orphan's environment
    # is empty, so the stop must not settle on "no orphans" at its first look.
    orphan = ('setsid env -i sh -c "sleep 0.02; export STABLEHAND_ID=$STABLEHAND_ID '
              'STABLEHAND_INSTANCE=$STABLEHAND_INSTANCE; exec sleep 305" &'
              ' while grep -q STABLEHAND_ID /proc/$!/environ; do :; done; exit 0')
    script = f"trap '{orphan}' TERM; echo ready; while :; do sleep 0.05; done"
    record = await start(client, command=script)
    await async_wait_for(lambda: printed(client, record["id"], "ready"), what="trap in place")
    instance = client.supervisor._instance
    await client.post(f"/processes/{record['id']}/signals/kill")
    assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"
    await async_wait_for(_slow_exec_over, what="the orphan's exec chain to end")
    assert marked_processes(record["id"], instance) == []
    assert await _process_running("sleep 305") is None


async def test_orphan_with_an_empty_environment_is_left_alone(client: Any) -> None:
    # Re-parented to the keeper but carrying no marker: it cannot be told to be the
    # record's, so no stop signals it, and stops still finish.
    record = await start(client, command="(setsid env -i sleep 304 &); sleep 300")
    stranger = await async_wait_for(lambda: _process_running("sleep 304"), what="orphan running")
    await client.post(f"/processes/{record['id']}/signals/kill")
    assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"
    other = await start(client, argv=["sleep", "30"])
    await client.post(f"/processes/{other['id']}/signals/kill")
    assert (await wait_idle(client, other["id"]))["exitState"] == "canceled"
    try:
        assert alive(stranger.pid) and stranger.ppid() == client.supervisor.keeper_pid
    finally:
        stranger.kill()
        stranger.wait(5)


async def _slow_exec_over() -> bool:
    """Whether the drawn-out exec has reached ``sleep 305`` or is gone without it."""
    lines = [" ".join(proc.info["cmdline"] or []) for proc in psutil.process_iter(["cmdline"])]
    return "sleep 305" in lines or not any("sleep 0.02; export" in line for line in lines)


async def _process_running(cmdline: str) -> psutil.Process | None:
    """A process of this test run with that command line (the test process's own
    descendants and orphans: another run of the suite on the machine is not ours)."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()) == cmdline:
                return proc
        except psutil.Error:
            continue
    return None


async def _marked(process_id: int, instance: str, n: int) -> bool:
    return len(marked_processes(process_id, instance)) >= n - 1


async def test_exit_zero_is_success(client: Any) -> None:
    record = await start(client, argv=["true"])
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "success" and final["exitCode"] == 0 and final["error"] is None


async def test_exit_three_is_failed_with_code(client: Any) -> None:
    record = await start(client, command="exit 3")
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed" and final["exitCode"] == 3
    assert "3" in final["error"]


async def test_signal_from_outside_is_failed_with_signal(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"])
    os.kill(record["pid"], signal.SIGKILL)
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed"
    assert final["exitSignal"] == "SIGKILL" and final["exitCode"] is None


async def test_missing_program_fails_with_clear_error(client: Any) -> None:
    record = await start(client, argv=["/nonexistent/program-xyz"])
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed"
    assert "/nonexistent/program-xyz" in final["error"] and "No such file" in final["error"]
    assert final["pid"] is None


async def test_not_executable_fails(client: Any, tmp_path: Any) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    record = await start(client, argv=[str(script)])
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed" and "Permission denied" in final["error"]


async def test_bad_cwd_fails_naming_the_directory(client: Any) -> None:
    record = await start(client, argv=["true"], cwd="/no/such/dir")
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "failed" and "/no/such/dir" in final["error"]


async def test_cwd_and_env_reach_the_child(client: Any, tmp_path: Any) -> None:
    record = await start(client, command='echo "$PWD $GREETING $STABLEHAND_ID"', cwd=str(tmp_path),
                         env={"GREETING": "hello"})
    await wait_idle(client, record["id"])
    out = (client.config.output_dir / f"{record['id']}.stdout").read_text()
    assert out.strip() == f"{tmp_path} hello {record['id']}"


async def test_private_variables_are_not_inherited(make_daemon: Any, monkeypatch: Any) -> None:
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "WATCHDOG_USEC", "STABLEHAND_TOKEN"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("PLAIN_VARIABLE", "inherited")
    client = await make_daemon()  # the daemon reads its environment once, at start
    record = await start(client, argv=["env"])
    await wait_idle(client, record["id"])
    out = (client.config.output_dir / f"{record['id']}.stdout").read_text()
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "WATCHDOG_USEC", "STABLEHAND_TOKEN"):
        assert f"{name}=" not in out
    assert "PLAIN_VARIABLE=inherited" in out
    assert f"STABLEHAND_ID={record['id']}" in out


async def test_timeout_ends_as_timeout(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"], timeout=0.5)
    assert record["timeout"] == 0.5
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "timeout"
    assert not alive(record["pid"])


async def test_max_concurrent_queues_fifo(make_daemon: Any) -> None:
    client = await make_daemon(max_concurrent=2)
    records = [await start(client, argv=["sleep", "30"]) for _ in range(5)]
    assert [r["state"] for r in records] == ["running", "running", "queued", "queued", "queued"]
    assert all(r["pid"] is None for r in records[2:])

    third = records[2]
    response = await client.post(f"/processes/{third['id']}/signals/kill")
    assert response.status == 200
    body = await response.json()
    assert body["state"] == "idle" and body["exitState"] == "canceled" and body["pid"] is None

    await client.post(f"/processes/{records[0]['id']}/signals/kill")
    await wait_idle(client, records[0]["id"])
    fourth = await async_wait_for(lambda: _state_is(client, records[3]["id"], "running"))
    assert fourth["pid"] is not None
    assert (await get(client, records[4]["id"]))["state"] == "queued"
    assert (await get(client, third["id"]))["pid"] is None, "a canceled queued record never ran"
    for record in (records[1], records[3], records[4]):
        await client.post(f"/processes/{record['id']}/signals/kill")
    for record in records:
        await wait_idle(client, record["id"])


async def _state_is(client: Any, process_id: int, state: str) -> dict[str, Any] | None:
    record = await get(client, process_id)
    return record if record["state"] == state and (state != "running" or record["pid"]) else None


async def test_kill_conflicts(client: Any) -> None:
    record = await start_ignoring_term(client, grace=5)
    assert (await client.post(f"/processes/{record['id']}/signals/kill")).status == 200
    again = await client.post(f"/processes/{record['id']}/signals/kill")
    assert again.status == 409
    assert "terminating" in (await again.json())["error"]
    os.kill(record["pid"], signal.SIGKILL)
    await wait_idle(client, record["id"])
    idle = await client.post(f"/processes/{record['id']}/signals/kill")
    assert idle.status == 409 and "idle" in (await idle.json())["error"]


async def test_wait_times_out_with_408_and_the_record(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"])
    response = await client.get(f"/processes/{record['id']}/wait", params={"timeout": "0.1"})
    assert response.status == 408
    assert (await response.json())["state"] == "running"
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_list_newest_first_with_filters_and_cursor(client: Any) -> None:
    ids = [(await start(client, argv=["true"], ref="a" if i % 2 else "b"))["id"] for i in range(5)]
    for process_id in ids:
        await wait_idle(client, process_id)
    body = await (await client.get("/processes", params={"limit": "2"})).json()
    assert [p["id"] for p in body["processes"]] == ids[::-1][:2]
    assert body["next"] is not None
    page2 = await (await client.get("/processes", params={"limit": "2", "cursor": body["next"]})).json()
    assert [p["id"] for p in page2["processes"]] == ids[::-1][2:4]
    only_a = await (await client.get("/processes", params={"ref": "a"})).json()
    assert {p["ref"] for p in only_a["processes"]} == {"a"}
    success = await (await client.get("/processes", params={"exitState": "success", "state": "idle"})).json()
    assert len(success["processes"]) == 5 and success["next"] is None


async def test_healthz(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["status"] == "ok"


async def test_client_disconnect_does_not_cancel_a_start(client: Any) -> None:
    """A cancelled caller (a dropped connection) never leaves a half-done spawn."""
    import asyncio

    from daemon.model import StartSpec
    task = asyncio.ensure_future(client.supervisor.create(StartSpec(argv=["sleep", "30"])))
    await asyncio.sleep(0)  # the create has begun: its work now belongs to the supervisor
    task.cancel()
    records = await async_wait_for(lambda: _any_running(client), what="the start to finish")
    for record in records:
        assert record.pid is not None and alive(record.pid)
        await client.post(f"/processes/{record.id}/signals/kill")
        await wait_idle(client, record.id)


async def _any_running(client: Any) -> list[Any]:
    rows = await client.registry.list()
    return [r for r in rows if r.pid is not None] if rows else []


async def test_wait_right_after_a_fast_exit_is_never_a_false_408(client: Any) -> None:
    """Regression: a wait that raced the idle commit used to answer 408 with a stale record."""
    import asyncio

    async def one() -> None:
        record = await start(client, argv=["true"])
        final = await wait_idle(client, record["id"])
        assert final["exitState"] == "success"
    await asyncio.gather(*[one() for _ in range(60)])


async def test_children_inherit_no_daemon_fds(client: Any, tmp_path: Any) -> None:
    """Only stdin, stdout and stderr reach a child (sockets, pidfds, SQLite stay behind)."""
    script = "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"
    for body in ({}, {"cwd": str(tmp_path)}):  # without and with a chdir in the child
        record = await start(client, argv=["python3", "-c", script], **body)
        await wait_idle(client, record["id"])
        out = (client.config.output_dir / f"{record['id']}.stdout").read_text()
        assert out.strip() == "[0, 1, 2, 3]", out  # 3 is listdir's own handle
