"""Crash and restart: kill -9 the daemon under load, re-adopt, never touch a stranger."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import DaemonProcess, alive, marked_processes, wait_for
from tests.system.test_daemon import call


def _db(d: DaemonProcess) -> Path:
    return d.state_dir / "stablehand.db"


def _instance(d: DaemonProcess) -> str:
    with contextlib.closing(sqlite3.connect(_db(d))) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0]


def _integrity(d: DaemonProcess) -> str:
    with contextlib.closing(sqlite3.connect(_db(d))) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _ours_in_proc(instance: str) -> dict[int, int]:
    """pid -> STABLEHAND_ID of every live session leader of this instance."""
    import psutil
    found = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("STABLEHAND_INSTANCE") == instance and os.getsid(proc.pid) == proc.pid \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = int(env["STABLEHAND_ID"])
        except (psutil.Error, OSError, KeyError):
            continue
    return found


async def _post_many(d: Any, n: int, results: list[int]) -> None:
    url = d.url
    async with aiohttp.ClientSession(headers=d.headers()) as session:
        async def one() -> None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.post(url + "/processes", json={"argv": ["sleep", "600"]},
                                        timeout=aiohttp.ClientTimeout(total=20)) as response:
                    if response.status in (200, 201):
                        results.append((await response.json())["id"])
        await asyncio.gather(*[one() for _ in range(n)])


async def test_kill9_under_load_loses_nothing(daemon: Any) -> None:
    d = daemon("--grace", "2").start()
    acknowledged: list[int] = []
    await _post_many(d, 200, acknowledged)
    assert len(acknowledged) == 200
    instance = _instance(d)
    for round_number in range(3):
        burst = asyncio.ensure_future(_post_many(d, 100, acknowledged))
        await asyncio.sleep(0.05 * (round_number + 1))  # crash while the burst is in flight
        d.kill9()
        await burst
        d.start()
        assert _integrity(d) == "ok"
        assert len(set(acknowledged)) == len(acknowledged)
        for process_id in acknowledged:
            status, record = call(d, "GET", f"/processes/{process_id}")
            assert status == 200 and record["id"] == process_id
        # Every child of ours alive in /proc is a running record with that pid.
        for pid, process_id in _ours_in_proc(instance).items():
            status, record = call(d, "GET", f"/processes/{process_id}")
            assert status == 200 and record["state"] == "running" and record["pid"] == pid, record
    # Running includes starts whose reply was lost in a crash: committed, so they ran.
    running = call(d, "GET", "/processes?state=running&limit=1000")[1]["processes"]
    assert len(running) >= 200
    for record in running:
        assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 200
    for record in running:
        status, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")
        assert status == 200 and final["exitState"] == "canceled"
        assert not alive(record["pid"])
    assert _ours_in_proc(instance) == {}
    # Ids handed out before the crashes are never reused.
    status, new = call(d, "POST", "/processes", {"argv": ["true"]})
    assert new["id"] > max(acknowledged)
    call(d, "GET", f"/processes/{new['id']}/wait?timeout=10")


def test_children_that_exit_while_down_are_recorded(daemon: Any) -> None:
    d = daemon("--grace", "1").start()
    _, short = call(d, "POST", "/processes", {"command": "sleep 0.3; exit 4"})
    _, stopping = call(d, "POST", "/processes", {"argv": ["sleep", "600"]})
    d.kill9()
    wait_for(lambda: not alive(short["pid"]), what="short child to exit")
    os.kill(stopping["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(stopping["pid"]))
    d.start()
    # The keeper reaped both and journalled their exits: recorded exactly (an exit the
    # keeper had not reaped yet when the daemon came back arrives just after).
    _, after = call(d, "GET", f"/processes/{short['id']}/wait?timeout=10")
    assert (after["state"], after["exitState"], after["exitCode"]) == ("idle", "failed", 4)
    _, after = call(d, "GET", f"/processes/{stopping['id']}/wait?timeout=10")
    assert (after["state"], after["exitState"], after["exitSignal"]) == ("idle", "failed", "SIGKILL")


def test_terminating_record_is_finished_after_restart(daemon: Any) -> None:
    d = daemon("--grace", "30").start()
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    _, record = call(d, "POST", "/processes", {"command": script, "grace": 1})
    out = d.state_dir / "output" / f"{record['id']}.stdout"
    wait_for(lambda: out.exists() and "ready" in out.read_text())
    assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 200
    d.kill9()
    assert alive(record["pid"])
    d.start()
    status, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")
    assert status == 200 and final["exitState"] == "canceled"
    assert not alive(record["pid"])


def _crash_then_lose_the_child(d: DaemonProcess) -> dict[str, Any]:
    """Start a child, kill -9 the daemon, then kill the child while no daemon watches it."""
    d.start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "600"]})
    d.kill9()
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(record["pid"]))
    return record


def test_recycled_pid_is_treated_as_gone_and_never_signalled(daemon: Any) -> None:
    d = daemon()
    record = _crash_then_lose_the_child(d)
    # A recycled pid belongs to a process started later: let the kernel's start-time
    # clock move past the original's tick, as any real recycling would.
    with contextlib.closing(sqlite3.connect(_db(d))) as conn:
        ticks = conn.execute("SELECT pid_start_time FROM processes WHERE id = ?",
                             (record["id"],)).fetchone()[0]
    if ticks is not None:
        wait_for(lambda: _uptime_ticks() > ticks + 1, what="the clock to pass the original tick")
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        with contextlib.closing(sqlite3.connect(_db(d))) as conn, conn:
            conn.execute("UPDATE processes SET pid = ? WHERE id = ?", (stranger.pid, record["id"]))
        d.start()
        _, after = call(d, "GET", f"/processes/{record['id']}")
        assert after["state"] == "idle" and after["exitState"] == "failed"
        assert alive(stranger.pid), "a process with a different start time is a stranger"
        assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 409
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def _uptime_ticks() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0]) * os.sysconf("SC_CLK_TCK")


def test_stranger_with_the_same_start_time_but_no_marker_is_not_adopted(daemon: Any) -> None:
    """Defence in depth: pid and start time match, but the process is not ours by its env."""
    d = daemon()
    record = _crash_then_lose_the_child(d)
    stranger = subprocess.Popen(["sleep", "60"], env={"PATH": os.environ["PATH"]})
    try:
        stranger_ticks = int(Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        with contextlib.closing(sqlite3.connect(_db(d))) as conn, conn:
            conn.execute("UPDATE processes SET pid = ?, pid_start_time = ? WHERE id = ?",
                         (stranger.pid, stranger_ticks, record["id"]))
        d.start()
        _, after = call(d, "GET", f"/processes/{record['id']}")
        assert after["state"] == "idle" and after["exitState"] == "failed"
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_child_spawned_but_never_recorded_is_adopted(daemon: Any) -> None:
    """A crash between spawn and the pid commit: the STABLEHAND_ID marker finds the child."""
    d = daemon().start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "600"]})
    d.kill9()
    with contextlib.closing(sqlite3.connect(_db(d))) as conn, conn:
        conn.execute("UPDATE processes SET pid = NULL, pid_start_time = NULL WHERE id = ?", (record["id"],))
    d.start()
    _, after = call(d, "GET", f"/processes/{record['id']}")
    assert after["state"] == "running" and after["pid"] == record["pid"]
    assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 200
    _, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")
    assert final["exitState"] == "canceled" and not alive(record["pid"])


def test_marked_child_whose_record_is_idle_is_stopped(daemon: Any) -> None:
    d = daemon("--grace", "1").start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "600"]})
    instance = _instance(d)
    d.kill9()
    with contextlib.closing(sqlite3.connect(_db(d))) as conn, conn:
        conn.execute("UPDATE processes SET state = 'idle', exit_state = 'canceled' WHERE id = ?",
                     (record["id"],))
    d.start()
    wait_for(lambda: not alive(record["pid"]), what="the stray to be stopped")
    assert marked_processes(record["id"], instance) == []


def test_detach_leaves_children_for_the_next_daemon(daemon: Any) -> None:
    d = daemon("--shutdown", "detach").start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "600"], "timeout": 600})
    assert d.stop() == 0
    assert alive(record["pid"])
    d.start()
    _, after = call(d, "GET", f"/processes/{record['id']}")
    assert after["state"] == "running"
    assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 200
    _, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")
    assert final["exitState"] == "canceled" and not alive(record["pid"])


def test_detach_logs_once_what_it_leaves_running(daemon: Any) -> None:
    import json
    d = daemon("--shutdown", "detach").start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "600"]})
    assert d.stop() == 0
    detached = [json.loads(line) for line in d.log().splitlines() if '"daemon.detached"' in line]
    assert len(detached) == 1
    assert detached[0]["processes"] == [{"id": record["id"], "pid": record["pid"]}]
    assert alive(record["pid"])
    d.start()   # the next daemon adopts it; stop it there
    assert call(d, "POST", f"/processes/{record['id']}/signals/kill", {})[0] == 200
    _, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")
    assert final["exitState"] == "canceled" and not alive(record["pid"])


def test_queued_records_survive_a_restart_in_order(daemon: Any) -> None:
    d = daemon("--max-concurrent", "1", "--shutdown", "detach").start()
    records = [call(d, "POST", "/processes", {"argv": ["sleep", "600"]})[1] for _ in range(3)]
    assert [r["state"] for r in records] == ["running", "queued", "queued"]
    d.kill9()
    d.start()
    assert [call(d, "GET", f"/processes/{r['id']}")[1]["state"] for r in records] == \
        ["running", "queued", "queued"]
    call(d, "POST", f"/processes/{records[0]['id']}/signals/kill", {})
    wait_for(lambda: call(d, "GET", f"/processes/{records[1]['id']}")[1]["pid"], what="second to start")
    assert call(d, "GET", f"/processes/{records[2]['id']}")[1]["state"] == "queued"
    for record in records:
        call(d, "POST", f"/processes/{record['id']}/signals/kill", {})
        call(d, "GET", f"/processes/{record['id']}/wait?timeout=20")


def test_idempotency_key(daemon: Any) -> None:
    import json
    import urllib.request
    d = daemon().start()

    def post(body: dict[str, Any], key: str) -> tuple[int, Any]:
        request = urllib.request.Request(d.url + "/processes", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Idempotency-Key": key, **d.headers()})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, first = post({"argv": ["sleep", "600"]}, "abc-1")
    assert status == 201
    status, again = post({"argv": ["sleep", "600"]}, "abc-1")
    assert status == 200 and again["id"] == first["id"] and again["pid"] == first["pid"]
    d.kill9()
    d.start()
    status, after_crash = post({"argv": ["sleep", "600"]}, "abc-1")
    assert status == 200 and after_crash["id"] == first["id"]
    status, conflict = post({"argv": ["sleep", "601"]}, "abc-1")
    assert status == 409 and "Idempotency-Key" in conflict["error"]
    call(d, "POST", f"/processes/{first['id']}/signals/kill", {})
    call(d, "GET", f"/processes/{first['id']}/wait?timeout=20")
