"""systemd's protocols, spoken by the real daemon: sd_notify, watchdog, socket activation."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PYTHON, DaemonProcess, free_port, wait_for
from tests.system.test_daemon import call

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def seen(self, line: str) -> bool:
        return any(line in message.split("\n") for message in self.drain())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Any:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_ready_watchdog_stopping_and_clean_child_env(daemon: Any, notify: NotifySocket) -> None:
    d = daemon(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"})
    d.start(wait=False)
    wait_for(lambda: notify.seen("READY=1"), 20, "READY=1")
    assert call(d, "GET", "/healthz")[0] == 200, "READY=1 comes only once the API answers"
    assert any(m.startswith("READY=1") and "STATUS=" in m for m in notify.messages)
    notify.messages.clear()
    wait_for(lambda: sum("WATCHDOG=1" in m for m in notify.drain()) >= 3, 10, "three watchdog pings")

    _, record = call(d, "POST", "/processes", {"argv": ["env"]})
    call(d, "GET", f"/processes/{record['id']}/wait?timeout=10")
    env = (d.state_dir / "output" / f"{record['id']}.stdout").read_text()
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        assert f"{name}=" not in env

    assert d.stop() == 0
    assert notify.seen("STOPPING=1")


def test_abstract_notify_socket(daemon: Any) -> None:
    name = f"stablehand-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(20)
    try:
        d = daemon(env={"NOTIFY_SOCKET": "@" + name}).start(wait=False)
        assert "READY=1" in sock.recv(4096).decode().split("\n")
        d.wait_ready()
    finally:
        sock.close()


def test_socket_activation_serves_the_inherited_socket(tmp_path: Path) -> None:
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    fd = listener.fileno()
    state = tmp_path / "state"
    # LISTEN_PID must be the daemon's own pid: a tiny launcher moves the socket to fd 3,
    # sets LISTEN_PID to its pid and execs the daemon (as systemd does).
    launcher = (f"import os; os.dup2({fd}, 3); os.close({fd}); "
                "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES='tcp'); "
                f"os.execv({PYTHON!r}, [{PYTHON!r}, '-m', 'daemon', 'serve', '--state-dir', {str(state)!r}, "
                f"'--listen', 'none', '--socket', {str(tmp_path / 'unused.sock')!r}, '--log-format', 'json'])")
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([PYTHON, "-c", launcher], pass_fds=(fd,), stdout=log, stderr=log)
    log.close()
    listener.close()
    try:
        d = DaemonProcess(state, port=port)
        d.proc = proc
        d.log_path = tmp_path / "daemon.log"
        d.wait_ready()
        status, record = call(d, "POST", "/processes", {"argv": ["true"]})
        assert status == 201
        assert not (tmp_path / "unused.sock").exists(), "with LISTEN_FDS it binds nothing itself"
        call(d, "GET", f"/processes/{record['id']}/wait?timeout=10")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    script = shutil.which("stablehand") or str(Path(sys.executable).with_name("stablehand"))
    units = ("stablehand.service", "stablehand.socket", "stablehand-keeper.service")
    for unit in units:
        text = (ROOT / "systemd" / unit).read_text().replace("/usr/local/bin/stablehand", script)
        (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in units)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
