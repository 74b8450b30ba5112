"""The keeper holds the children: what a daemon crash, a restart and a killed keeper cost.

Daemon and keeper run as real subprocesses (the daemon starts its keeper); each
test kills one of them as an operator or a crash would and checks what the user
then sees through the API, in the output files and in /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import PYTHON, DaemonProcess, alive, marked_processes, stop_keeper, wait_for
from tests.system.test_daemon import call


def _record(d: DaemonProcess, process_id: int) -> Any:
    status, body = call(d, "GET", f"/processes/{process_id}")
    assert status == 200, body
    return body


def _idle(d: DaemonProcess, process_id: int, timeout: float = 20.0) -> Any:
    wait_for(lambda: _record(d, process_id)["state"] == "idle", timeout, f"process {process_id} idle")
    return _record(d, process_id)


def _stdin(d: DaemonProcess, process_id: int, data: bytes) -> int:
    request = urllib.request.Request(f"{d.url}/processes/{process_id}/stdin", data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream",
                                              **d.headers()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _output(d: DaemonProcess, process_id: int, stream: str = "stdout") -> bytes:
    """What the keeper wrote of a stream (its file is made at the first byte)."""
    path = d.state_dir / "output" / f"{process_id}.{stream}"
    return path.read_bytes() if path.exists() else b""


def _instance(d: DaemonProcess) -> str:
    with contextlib.closing(sqlite3.connect(d.state_dir / "stablehand.db")) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0])


def test_exits_while_the_daemon_is_down_are_recorded_exactly(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    go = tmp_path / "go"
    wait_then = f"while [ ! -e {go} ]; do sleep 0.02; done; exit"
    _, three = call(d, "POST", "/processes", {"command": f"{wait_then} 3"})
    _, usr1 = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
    _, zero = call(d, "POST", "/processes", {"command": f"{wait_then} 0"})
    d.kill9()
    go.touch()
    os.kill(usr1["pid"], signal.SIGUSR1)        # from outside, while no daemon watches
    wait_for(lambda: not any(alive(r["pid"]) for r in (three, usr1, zero)), 10, "all three gone")
    d.start()
    got = [_idle(d, r["id"]) for r in (three, usr1, zero)]
    assert [(r["exitState"], r["exitCode"], r["exitSignal"]) for r in got] == [
        ("failed", 3, None), ("failed", None, "SIGUSR1"), ("success", 0, None)]
    assert got[0]["error"] == "exited with status 3" and got[1]["error"] == "killed by SIGUSR1"


def test_a_stdin_pipe_outlives_a_daemon_restart(daemon: Any) -> None:
    d = daemon().start()
    _, cat = call(d, "POST", "/processes", {"argv": ["cat"], "stdin": "pipe"})
    assert _stdin(d, cat["id"], b"before\n") == 200
    d.kill9()
    d.start()
    assert _record(d, cat["id"])["state"] == "running"
    assert _stdin(d, cat["id"], b"after\n") == 200
    assert call(d, "POST", f"/processes/{cat['id']}/stdin/close")[0] == 204
    assert _idle(d, cat["id"])["exitState"] == "success"
    assert _output(d, cat["id"]) == b"before\nafter\n"


def test_output_printed_across_a_restart_is_all_captured_in_order(daemon: Any) -> None:
    d = daemon("--shutdown", "detach").start()
    script = "import time\nfor i in range(400):\n    print(i, flush=True); time.sleep(0.005)\n"
    _, printer = call(d, "POST", "/processes", {"argv": ["python3", "-c", script]})
    wait_for(lambda: _output(d, printer["id"]).count(b"\n") >= 20, 10, "printing before")
    assert d.stop() == 0                         # a graceful restart: detach, as under systemd
    lines_then = _output(d, printer["id"]).count(b"\n")
    wait_for(lambda: _output(d, printer["id"]).count(b"\n") > lines_then + 20, 10,
             "printing while no daemon runs")
    d.start()
    assert _idle(d, printer["id"])["exitState"] == "success"
    assert _output(d, printer["id"]) == b"".join(b"%d\n" % i for i in range(400))


def test_yes_under_a_4_mib_cap_keeps_the_disk_bound_and_the_daemon_answers(daemon: Any) -> None:
    cap = 4 * 1024 * 1024
    d = daemon(env={"STABLEHAND_MAX_OUTPUT_BYTES": str(cap)}).start()
    _, yes = call(d, "POST", "/processes", {"argv": ["yes"]})
    path = d.state_dir / "output" / f"{yes['id']}.stdout"
    most, answered = 0, 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        on_disk = sum(os.stat(p).st_blocks * 512 for p in (path, Path(f"{path}.idx")) if p.exists())
        most = max(most, on_disk)
        with urllib.request.urlopen(d.url + "/healthz", timeout=5) as response:
            answered += response.status == 200
        time.sleep(0.1)   # the sampling period the issue names, not a wait for a condition
    assert most <= cap + 1024 * 1024, f"{most} bytes on disk for one stream"
    assert os.stat(path).st_size > 4 * cap, "yes wrote far more than the cap meanwhile"
    assert answered >= 50
    assert call(d, "POST", f"/processes/{yes['id']}/signals/kill")[0] in (200, 202)
    assert _idle(d, yes["id"])["exitState"] == "canceled"


def test_a_killed_keeper_is_replaced_and_its_children_are_accounted_for(daemon: Any,
                                                                        tmp_path: Path) -> None:
    d = daemon().start()
    go = tmp_path / "go"
    _, waits = call(d, "POST", "/processes", {"command": f"while [ ! -e {go} ]; do sleep 0.02; done"})
    _, sleeps = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
    _, ends = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
    old = d.keeper_pid()
    assert old is not None
    os.kill(ends["pid"], signal.SIGKILL)       # exits just as its keeper dies: status may be lost
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: d.keeper_pid() not in (None, old), 20, "a new keeper")
    ended = _idle(d, ends["id"])
    assert ended["exitState"] == "failed"
    assert ended["exitSignal"] == "SIGKILL" or "keeper" in ended["error"]
    assert _record(d, waits["id"])["state"] == "running"       # re-adopted
    assert _record(d, sleeps["id"])["state"] == "running"
    go.touch()
    gone = _idle(d, waits["id"])
    assert gone["exitState"] == "failed" and "its keeper was killed" in gone["error"]
    assert call(d, "POST", f"/processes/{sleeps['id']}/signals/kill")[0] in (200, 202)
    assert _idle(d, sleeps["id"])["exitState"] == "canceled"
    assert not alive(sleeps["pid"])
    _, fresh = call(d, "POST", "/processes", {"argv": ["sh", "-c", "echo again"]})
    assert _idle(d, fresh["id"])["exitState"] == "success", _record(d, fresh["id"])
    assert _output(d, fresh["id"]) == b"again\n"
    instance = _instance(d)
    assert all(marked_processes(r["id"], instance) == [] for r in (waits, sleeps, ends, fresh))


def test_garbage_on_the_keepers_socket_costs_nothing(daemon: Any) -> None:
    d = daemon().start()
    keeper = d.keeper_pid()
    for junk in (b"\x00\xff" * 1000 + b"\n", b'{"op": "spawn"}\n', b"x" * 100_000):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(d.state_dir / "keeper.sock"))
            sock.sendall(junk)
    _, record = call(d, "POST", "/processes", {"argv": ["sh", "-c", "echo fine"]})
    assert _idle(d, record["id"])["exitState"] == "success"
    assert _output(d, record["id"]) == b"fine\n"
    assert d.keeper_pid() == keeper


def test_an_external_keeper_is_waited_for_and_never_started(daemon: Any, tmp_path: Path) -> None:
    # Under systemd (keeper = external) the keeper is its own unit's: the daemon waits for
    # it to answer and never starts one, and a detaching daemon leaves it and its children.
    d = daemon(env={"STABLEHAND_KEEPER": "external", "STABLEHAND_SHUTDOWN": "detach"})
    d.start(wait=False)
    wait_for(lambda: "keeper.waiting" in d.log(), 10, "the daemon to wait for a keeper")
    assert d.keeper_pid() is None and d.proc is not None and d.proc.poll() is None
    keeper = subprocess.Popen([PYTHON, "-m", "daemon", "keeper", "--state-dir", str(d.state_dir)],
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        d.wait_ready()
        assert d.keeper_pid() == keeper.pid
        _, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
        assert psutil.Process(record["pid"]).ppid() == keeper.pid
        assert d.stop() == 0
        assert alive(record["pid"]) and keeper.poll() is None
    finally:
        stop_keeper(d.state_dir)
        keeper.wait(10)
    assert not alive(record["pid"])
