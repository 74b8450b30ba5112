"""The daemon as a real subprocess: both listeners, restarts, locking, clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import DaemonProcess, alive, wait_for


def call(daemon: DaemonProcess, method: str, path: str, body: Any = None,
         unix: bool = False) -> tuple[int, Any]:
    """One HTTP call over TCP, or over the Unix socket with curl-like raw HTTP."""
    data = None if body is None else json.dumps(body).encode()
    if unix:
        return _unix_call(daemon.socket_path, method, path, data)
    request = urllib.request.Request(daemon.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **daemon.headers()})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _unix_call(path: Path, method: str, target: str, data: bytes | None) -> tuple[int, Any]:
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(path))

    conn = UnixConnection("localhost")
    try:
        conn.request(method, target, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_same_api_on_tcp_and_unix_socket(daemon: Any, loop: str) -> None:
    d = daemon("--event-loop", loop).start()
    status, created = call(d, "POST", "/processes", {"argv": ["sleep", "30"]}, unix=True)
    assert status == 201
    status, over_tcp = call(d, "GET", f"/processes/{created['id']}")
    assert status == 200 and over_tcp["pid"] == created["pid"]
    status, over_unix = call(d, "GET", f"/processes/{created['id']}", unix=True)
    assert over_unix == over_tcp
    assert call(d, "POST", f"/processes/{created['id']}/signals/kill", {}, unix=True)[0] == 200
    status, final = call(d, "GET", f"/processes/{created['id']}/wait?timeout=10")
    assert status == 200 and final["exitState"] == "canceled"
    assert d.stop() == 0


def test_exited_orphans_are_reaped_by_the_keeper(daemon: Any) -> None:
    # The subshell exits at once: its sleep is re-parented to the keeper (a subreaper),
    # and exits 0.2 s later. The keeper reaps its zombie; the daemon has no children
    # but its keeper.
    d = daemon().start()
    status, created = call(d, "POST", "/processes", {"command": "(sleep 0.2 &) ; sleep 30"})
    assert status == 201
    assert d.proc is not None
    keeper_pid = d.keeper_pid()
    assert keeper_pid is not None
    keeper = psutil.Process(keeper_pid)
    assert [child.pid for child in psutil.Process(d.proc.pid).children()] == [keeper_pid]

    def orphan_seen() -> bool:
        return any(child.pid != created["pid"] for child in keeper.children())
    wait_for(orphan_seen, 5, "the orphan to be re-parented to the keeper")

    def only_the_leader_left() -> bool:
        return [child.pid for child in keeper.children()] == [created["pid"]]
    wait_for(only_the_leader_left, 5, "the orphan's zombie to be reaped")
    assert call(d, "POST", f"/processes/{created['id']}/signals/kill", {})[0] == 200
    assert call(d, "GET", f"/processes/{created['id']}/wait?timeout=10")[0] == 200
    assert d.stop() == 0
    assert not psutil.pid_exists(keeper_pid), "shutdown = stop ends the keeper too"


# What ``nohup`` and a script's ``&`` do to what they start, then the daemon itself.
_LAUNCH_WITH_SIGNALS_IGNORED = """
import os, signal, sys
for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _signal_masks(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        return {key: int(value, 16) for key, _, value in (line.partition(":\t") for line in status)
                if key in ("SigIgn", "SigBlk")}


def test_children_start_with_default_signals_whatever_the_daemon_inherited(daemon: Any) -> None:
    d = daemon()
    d.args = [d.args[0], "-c", _LAUNCH_WITH_SIGNALS_IGNORED, *d.args[1:]]
    d.start()
    assert d.proc is not None
    daemon_masks = _signal_masks(d.proc.pid)
    assert daemon_masks["SigBlk"] == 0   # the daemon still ignores SIGHUP: it has a handler
    status, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
    assert status == 201
    assert _signal_masks(record["pid"]) == {"SigIgn": 0, "SigBlk": 0}
    response = call(d, "POST", f"/processes/{record['id']}/stop", {"signal": "SIGINT", "grace": 30})
    assert response[0] == 200
    status, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=10")
    assert status == 200 and final["exitSignal"] == "SIGINT"
    d.proc.send_signal(signal.SIGHUP)     # ignored, as it was when the daemon was started
    assert call(d, "GET", "/processes")[0] == 200
    assert d.stop() == 0
    assert '"daemon.signals_reset"' in d.log()


def test_unix_socket_and_state_dir_are_private(daemon: Any) -> None:
    d = daemon().start()
    assert (d.socket_path.stat().st_mode & 0o777) == 0o600
    assert (d.state_dir.stat().st_mode & 0o777) == 0o700, "the registry holds callers' env"
    d.stop()
    assert not d.socket_path.exists()


def test_restart_keeps_every_id(daemon: Any) -> None:
    d = daemon().start()
    records = [call(d, "POST", "/processes", {"argv": ["true"], "ref": f"r{i}"})[1] for i in range(5)]
    for record in records:
        call(d, "GET", f"/processes/{record['id']}/wait?timeout=10")
    before = {r["id"]: call(d, "GET", f"/processes/{r['id']}")[1] for r in records}
    assert d.stop() == 0

    d.start()
    for process_id, record in before.items():
        status, again = call(d, "GET", f"/processes/{process_id}")
        assert status == 200 and again == record
    status, new = call(d, "POST", "/processes", {"argv": ["true"]})
    assert status == 201 and new["id"] > max(before)
    call(d, "GET", f"/processes/{new['id']}/wait?timeout=10")


def test_sigterm_stops_children_and_records_them(daemon: Any) -> None:
    d = daemon("--grace", "1").start()
    status, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"]})
    assert d.stop(signal.SIGTERM) == 0
    assert not alive(record["pid"])
    d.start()
    status, after = call(d, "GET", f"/processes/{record['id']}")
    assert after["state"] == "idle" and after["exitState"] == "canceled"


def test_second_daemon_on_same_state_dir_refuses(daemon: Any, tmp_path: Path) -> None:
    first = daemon().start()
    second = daemon(state="state", socket_path=tmp_path / "other.sock")
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(20) != 0
    assert "already using state dir" in second.log()
    assert call(first, "GET", "/healthz")[0] == 200


def test_second_daemon_on_same_socket_refuses(daemon: Any, tmp_path: Path) -> None:
    first = daemon().start()
    second = daemon(state="state2", socket_path=first.socket_path)
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(20) != 0
    assert "already using socket" in second.log()
    assert call(first, "GET", "/healthz", unix=True)[0] == 200


def test_bad_option_exits_78(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "serve", "--state-dir", str(tmp_path),
                             "--grace", "whenever"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "--grace" in result.stderr


def test_console_script_and_module_agree() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout
