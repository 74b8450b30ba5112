"""Helpers shared by the tests: deadlines instead of sleeps, process liveness, daemons."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

PYTHON = sys.executable
# A child that ignores SIGTERM and says so on stdout once the handler is in place.
IGNORE_TERM = ["python3", "-c",
               "import signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(300)"]


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def async_wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0,
                         what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def descendants_of(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def marked_processes(process_id: int, instance: str | None = None) -> list[int]:
    """Live processes whose environment says STABLEHAND_ID=<process_id>."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("STABLEHAND_ID") == str(process_id) and proc.status() != psutil.STATUS_ZOMBIE \
                    and (instance is None or env.get("STABLEHAND_INSTANCE") == instance):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def printed(client: Any, process_id: int, text: str, stream: str = "stdout") -> bool:
    """Whether a process's captured output (read through the API) contains ``text``."""
    response = await client.get(f"/processes/{process_id}/output", params={"stream": stream})
    return text.encode() in await response.read()


async def start_ignoring_term(client: Any, **body: Any) -> dict[str, Any]:
    """Start IGNORE_TERM and return its record once its SIGTERM handler is in place."""
    response = await client.post("/processes", json={"argv": IGNORE_TERM, **body})
    assert response.status == 201, await response.text()
    record = await response.json()
    await async_wait_for(lambda: printed(client, record["id"], "ready"), what="the child to be ready")
    return record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_output_when(path: Path, text: str, timeout: float = 10.0) -> None:
    wait_for(lambda: path.exists() and text in path.read_text(), timeout, f"{text!r} in {path}")


class DaemonProcess:
    """``stablehand serve`` as a real subprocess on a loopback port and a Unix socket."""

    def __init__(self, state_dir: Path, *extra: str, socket_path: Path | None = None,
                 env: dict[str, str] | None = None, port: int | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.socket_path = socket_path or (state_dir.parent / f"{state_dir.name}.sock")
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [PYTHON, "-m", "daemon", "serve", "--state-dir", str(state_dir),
                     "--listen", f"127.0.0.1:{self.port}", "--socket", str(self.socket_path),
                     "--log-format", "json", *extra]
        self.env = {**os.environ, **(env or {})}
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    def start(self, wait: bool = True) -> DaemonProcess:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=self.env,
                                     pass_fds=self.pass_fds)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        import urllib.request

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_for(ready, timeout, "the daemon to answer /healthz")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def token(self) -> str | None:
        """The token the daemon made in its state dir on first start (None if it made none)."""
        path = self.state_dir / "token"
        return path.read_text().strip() if path.exists() else None

    def headers(self) -> dict[str, str]:
        """An Authorization header for TCP calls, when the daemon has its own token."""
        token = self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def keeper_pid(self) -> int | None:
        """The pid of the state dir's keeper, if one runs (it outlives a killed or detached daemon)."""
        return keeper_of(self.state_dir)

    def cleanup(self) -> None:
        """Stop the daemon, then a keeper it left running (after kill -9, or a detach)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        stop_keeper(self.state_dir)


def queued_on_stdin(pid: int) -> int:
    """Bytes waiting in a process's stdin pipe (FIONREAD on a second reader; reads nothing)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    finally:
        os.close(fd)


def keeper_of(state_dir: Path) -> int | None:
    """The pid in ``<state_dir>/keeper.lock`` if that process is alive and is that keeper."""
    try:
        pid = int(json.loads((state_dir / "keeper.lock").read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return pid if b"keeper" in cmdline and os.fsencode(str(state_dir)) in cmdline else None


def stop_keeper(state_dir: Path, timeout: float = 20.0) -> None:
    """SIGTERM the state dir's keeper (it stops its children) and wait for it to be gone."""
    pid = keeper_of(state_dir)
    if pid is None:
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], timeout)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], 5)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
