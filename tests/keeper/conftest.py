"""Fixtures for the keeper: a real ``stablehand keeper`` subprocess and clients for it.

Each keeper started here is stopped at the end of its test (SIGTERM, then SIGKILL),
and every process it spawned is checked gone: the keeper is a child of pytest, but
after a ``kill -9`` of the keeper its children are not, so the leak check of
tests/conftest.py would not see them.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.keeper.client import KeeperClient, KeeperError
from tests.helpers import alive, wait_for

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[2]


class KeeperProcess:
    """``python -m daemon keeper --state-dir DIR`` as a subprocess of the test."""

    def __init__(self, state_dir: Path, *extra: str, python_flags: tuple[str, ...] = ()) -> None:
        self.state_dir = state_dir
        self.args = [PYTHON, *python_flags, "-m", "daemon", "keeper", "--state-dir", str(state_dir),
                     *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.keeper.log"
        self.spawned: set[int] = set()     # pids of children, cleaned up at the end

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> KeeperProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        wait_for(self._answers, 20, "the keeper to listen")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"keeper exited with {self.proc.returncode}:\n{self.log()}")
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(raw_address(self.state_dir))
                return True
            except OSError:
                return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        kill_and_reap(self.spawned)


def raw_address(state_dir: Path) -> str:
    """The socket path, shortened through /proc/self/fd when too long (tests' tmp dirs are)."""
    path = str(state_dir / "keeper.sock")
    if len(path.encode()) <= 107:
        return path
    fd = os.open(state_dir, os.O_PATH | os.O_CLOEXEC)   # closed at the end of the test
    _DIR_FDS.append(fd)
    return f"/proc/self/fd/{fd}/keeper.sock"


_DIR_FDS: list[int] = []


@pytest.fixture(autouse=True)
def _close_dir_fds() -> Iterator[None]:
    yield
    while _DIR_FDS:
        os.close(_DIR_FDS.pop())


def kill_and_reap(pids: set[int]) -> None:
    """SIGKILL each pid still alive (and its group), reaping it if it became our child."""
    for pid in pids:
        if not alive(pid):
            continue
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for pid in pids:
        wait_for(functools.partial(dead, pid), 10, f"pid {pid} to die")
        try:
            os.waitpid(pid, os.WNOHANG)   # re-parented to pytest if pytest is a subreaper
        except ChildProcessError:
            pass


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state dir whose socket path fits sun_path (most tests use tmp_path's long one)."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="kp", dir="/tmp"))
    yield base / "state"
    import shutil
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def keepers() -> Iterator[list[KeeperProcess]]:
    started: list[KeeperProcess] = []
    yield started
    for keeper in started:
        keeper.cleanup()


@pytest.fixture
def start_keeper(tmp_path: Path, keepers: list[KeeperProcess]) -> Any:
    def start(state_dir: Path | None = None, *extra: str, **kwargs: Any) -> KeeperProcess:
        keeper = KeeperProcess(state_dir or tmp_path / "state", *extra, **kwargs).start()
        keepers.append(keeper)
        return keeper
    return start


@pytest.fixture
async def clients() -> AsyncIterator[list[KeeperClient]]:
    opened: list[KeeperClient] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def connect(clients: list[KeeperClient], keepers: list[KeeperProcess]) -> Any:
    """``client = await connect(keeper)``: a client whose spawned pids the keeper fixture cleans."""
    async def open_client(keeper: KeeperProcess, **kwargs: Any) -> KeeperClient:
        client = await KeeperClient.connect(str(keeper.state_dir), **kwargs)
        clients.append(client)
        original = client.spawn

        async def spawn(*args: Any, **kw: Any) -> Any:
            spawned = await original(*args, **kw)
            keeper.spawned.add(spawned.pid)
            return spawned
        client.spawn = spawn   # type: ignore[method-assign]
        return client
    return open_client


def dead(pid: int) -> bool:
    return not alive(pid)


def gone_from_proc(pid: int) -> bool:
    """Not in /proc at all: reaped, not merely a zombie."""
    return not psutil.pid_exists(pid)


__all__ = ["KeeperError", "KeeperProcess", "gone_from_proc", "kill_and_reap"]


def output(keeper: KeeperProcess, child_id: int, stream: str = "stdout") -> bytes:
    """What the keeper has written of a child's stream so far (b"" before its first byte)."""
    path = keeper.state_dir / "output" / f"{child_id}.{stream}"
    return path.read_bytes() if path.exists() else b""
