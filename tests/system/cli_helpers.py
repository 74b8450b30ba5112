"""Running the ``stablehand`` CLI as a user would: a subprocess against a live daemon's socket."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess


def cli_args(d: Any, *args: str) -> list[str]:
    """``python -m daemon COMMAND --socket <the daemon's> ARGS...``"""
    return [sys.executable, "-m", "daemon", args[0], "--socket", str(d.socket_path), *args[1:]]


def cli(d: Any, *args: str, timeout: float = 30, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_args(d, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


class Watched:
    """A CLI subprocess whose stdout and stderr are read as they come, with deadlines."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                     **kwargs)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.fds = {"stdout": self.proc.stdout.fileno(), "stderr": self.proc.stderr.fileno()}
        self.seen = {"stdout": b"", "stderr": b""}

    def _pump(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False when both pipes are at EOF."""
        open_fds = [fd for fd in self.fds.values() if fd >= 0]
        if not open_fds:
            return False
        for fd in select.select(open_fds, [], [], timeout)[0]:
            data = os.read(fd, 65536)
            name = "stdout" if fd == self.fds["stdout"] else "stderr"
            if data:
                self.seen[name] += data
            else:
                self.fds[name] = -1
        return True

    def text(self, stream: str) -> str:
        return self.seen[stream].decode(errors="replace")

    def until(self, stream: str, text: str, timeout: float = 10.0) -> str:
        """Wait until ``stream`` has shown ``text``; returns all it showed."""
        deadline = time.monotonic() + timeout
        while text not in self.text(stream):
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                raise AssertionError(f"no {text!r} on {stream} within {timeout}s; stdout "
                                     f"{self.text('stdout')!r}, stderr {self.text('stderr')!r}")
        return self.text(stream)

    def finish(self, timeout: float = 15.0) -> int:
        """Read both pipes to their end and wait for the exit code."""
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the CLI did not end within {timeout}s: {self.seen}")
        code = self.proc.wait(max(1.0, deadline - time.monotonic()))
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def watch(d: Any, *args: str, **kwargs: Any) -> Watched:
    return Watched(cli_args(d, *args), **kwargs)


def shared_daemon(base: Path) -> Iterator[DaemonProcess]:
    """One daemon for a module's tests (each leaves every child it started idle)."""
    d = DaemonProcess(base / "state", "--grace", "2").start()
    yield d
    d.stop()
