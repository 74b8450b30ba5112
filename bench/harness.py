"""What every workload shares: a real daemon in a subprocess, its keeper, and a client pool.

The daemon is started as ``python -m daemon`` from the current directory, so the
checkout (or the tree ``bench.ab`` extracted) the benchmark runs in is the one
measured, whatever this package's own location.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

CLIENTS = 16
_J = TypeVar("_J")
_R = TypeVar("_R")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Seconds until ``url`` answered; RuntimeError if ``proc`` exits first or time runs out."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return time.perf_counter() - began
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def footprint(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open fds of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Daemon:
    """``python -m daemon serve`` on a loopback port and a throwaway state dir.

    ``settings`` are daemon settings (``daemon/config.py``), handed over as
    ``STABLEHAND_<NAME>`` environment variables, which every revision reads.
    """

    def __init__(self, state_dir: Path, settings: Mapping[str, object] | None = None) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings = dict(settings or {})
        self._keepers: set[int] = set()

    def start(self) -> float:
        """Start; returns seconds until /healthz answered.

        The daemon logs at its default level (info) to a file beside the state dir,
        as it would to journald: the log lines are part of what a start or stop costs.
        """
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, **{f"STABLEHAND_{k.upper()}": str(v) for k, v in self.settings.items()}}
        with open(self.state_dir.parent / f"{self.state_dir.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "serve", "--state-dir", str(self.state_dir),
                 "--listen", f"127.0.0.1:{self.port}", "--socket", "none", "--grace", "5",
                 "--token-file", "none"],  # loopback only; the figures leave the token out
                stdout=log, stderr=log, env=env)
        took = wait_http(self.url + "/healthz", self.proc)
        pid = self.keeper_pid()
        if pid:
            self._keepers.add(pid)
        return took

    def keeper_pid(self) -> int | None:
        """The pid of the keeper of this state dir, if one runs (``keeper.lock``, issue 17).

        Revisions before the keeper have no such file: None.
        """
        try:
            pid = int(json.loads((self.state_dir / "keeper.lock").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if b"keeper" in cmdline and alive(pid) else None

    def stop(self) -> None:
        """SIGTERM the daemon; then make sure the keeper it started is gone too.

        With the default ``shutdown = "stop"`` the daemon stops its keeper; if it
        did not (it crashed, or a setting detached it), the keeper is stopped
        here, by the pid its lock file named: no benchmark leaves one behind.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        for pid in self._keepers:
            if _wait_gone(pid, 20):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 30):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._keepers.clear()

    def cpu_ns(self) -> int:
        """CPU time used so far by all the daemon's threads (schedstat: nanoseconds)."""
        assert self.proc is not None
        total = 0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                total += int(Path(f"/proc/{self.proc.pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended meanwhile
        return total

    def footprint(self) -> dict[str, int]:
        assert self.proc is not None
        return footprint(self.proc.pid)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def pool(jobs: list[_J], worker: Callable[[_J], Awaitable[_R]]) -> list[_R]:
    """Run ``worker(job)`` over jobs with CLIENTS concurrent clients."""
    queue: asyncio.Queue[_J] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    results: list[_R] = []

    async def client() -> None:
        while not queue.empty():
            results.append(await worker(queue.get_nowait()))
    await asyncio.gather(*[client() for _ in range(CLIENTS)])
    return results


async def timed(session: aiohttp.ClientSession, method: str, url: str, reps: int, **kw: Any) -> float:
    """Median milliseconds of ``reps`` requests, one after the other."""
    samples = []
    for _ in range(reps):
        began = time.perf_counter()
        async with session.request(method, url, **kw) as response:
            await response.read()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


async def sample_healthz(session: aiohttp.ClientSession, url: str, done: asyncio.Event,
                         samples: list[float], every: float) -> None:
    """GET /healthz every ``every`` seconds until ``done``, appending each latency (ms):
    how responsive the daemon stays while a workload runs beside it (B8, B9)."""
    while not done.is_set():
        began = time.perf_counter()
        async with session.get(url + "/healthz") as response:
            await response.read()
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(every)
