"""The CLI and the Python client against a live daemon over its Unix socket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.client import ApiError, AsyncClient, Client, ConnectionFailed
from tests.helpers import alive


def cli(d: Any, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", args[0], "--socket", str(d.socket_path),
                           *args[1:]], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def live(daemon: Any) -> Any:
    return daemon("--grace", "2").start()


def test_run_ps_show_kill(live: Any) -> None:
    result = cli(live, "run", "--ref", "cli-job", "--", "sleep", "30")
    assert result.returncode == 0, result.stderr
    process_id = int(result.stdout)
    ps = cli(live, "ps")
    assert ps.returncode == 0 and "cli-job" in ps.stdout and "running" in ps.stdout
    assert ps.stdout.splitlines()[0].split()[:3] == ["ID", "REF", "STATE"]
    shown = json.loads(cli(live, "show", str(process_id), "--json").stdout)
    assert shown["ref"] == "cli-job" and alive(shown["pid"])
    assert cli(live, "kill", str(process_id)).returncode == 0
    assert cli(live, "wait", str(process_id)).returncode == 128 + 15
    assert not alive(shown["pid"])
    again = cli(live, "kill", str(process_id))
    assert again.returncode == 1 and "already idle" in again.stderr


def test_wait_exits_with_the_childs_code(live: Any) -> None:
    assert cli(live, "run", "--wait", "--", "sh", "-c", "exit 7").returncode == 7
    assert cli(live, "run", "--wait", "--", "true").returncode == 0
    missing = cli(live, "run", "--wait", "--", "/no/such/program")
    assert missing.returncode == 1


def test_logs_and_logs_follow(live: Any) -> None:
    process_id = cli(live, "run", "--", "sh", "-c", "echo one; echo two >&2; sleep 0.3; echo three").stdout
    follow = cli(live, "logs", "-f", process_id.strip())
    assert follow.returncode == 0 and follow.stdout == "one\nthree\n"
    assert cli(live, "logs", "--stderr", process_id.strip()).stdout == "two\n"


def test_stop_and_signal(live: Any) -> None:
    process_id = cli(live, "run", "--", "sleep", "30").stdout.strip()
    assert cli(live, "signal", process_id, "SIGCONT").returncode == 0
    assert cli(live, "stop", process_id, "--signal", "SIGINT", "--grace", "1").returncode == 0
    assert cli(live, "wait", process_id).returncode == 128 + 2
    bad = cli(live, "signal", process_id, "SIGWHAT")
    assert bad.returncode == 1


def test_events_prints_transitions(live: Any) -> None:
    import select
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "events", "--socket", str(live.socket_path),
                             "--json"], stdout=subprocess.PIPE, text=True)
    try:
        # Start throwaway processes until the stream shows one: then it is surely subscribed.
        for _ in range(100):
            cli(live, "run", "--", "true")
            if select.select([proc.stdout], [], [], 0.1)[0]:
                break
        else:
            raise AssertionError("the events stream never printed anything")
        process_id = int(cli(live, "run", "--", "sleep", "0.2").stdout)
        seen: list[tuple[int, str]] = []
        while (process_id, "idle") not in seen:
            assert select.select([proc.stdout], [], [], 10)[0], f"no event for {process_id}: {seen}"
            event = json.loads(proc.stdout.readline())
            seen.append((event["id"], event["state"]))
        mine = [state for pid, state in seen if pid == process_id]
        assert mine == ["running", "idle"]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_connection_error_says_what_was_tried(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "ps", "--socket", str(tmp_path / "none.sock")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 69
    assert str(tmp_path / "none.sock") in result.stderr and "stablehand serve" in result.stderr


def test_python_client(live: Any) -> None:
    with Client(socket_path=live.socket_path) as sh:
        record = sh.start(["sh", "-c", "echo hi; exit 3"], ref="py")
        final = sh.wait(record["id"])
        assert final["exitCode"] == 3 and sh.output(record["id"]) == b"hi\n"
        piped = sh.start(["cat"], stdin="pipe")
        assert sh.write_stdin(piped["id"], b"to stdin") == 8
        sh.close_stdin(piped["id"])
        assert sh.wait(piped["id"])["exitState"] == "success"
        assert sh.output(piped["id"]) == b"to stdin" and sh.output_range(piped["id"]) == (0, 8)
        with pytest.raises(ApiError) as info:
            sh.get(10**6)
        assert info.value.status == 404
    with pytest.raises(ConnectionFailed):
        Client(url="http://127.0.0.1:1").get(1)


async def test_async_client(live: Any) -> None:
    async with AsyncClient(socket_path=live.socket_path) as sh:
        record = await sh.start(["true"])
        final = await sh.wait(record["id"])
        assert final["exitState"] == "success"
        with pytest.raises(ApiError):
            await sh.kill(record["id"])
