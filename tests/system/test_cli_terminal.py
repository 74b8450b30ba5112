"""The CLI in a real terminal (a pty it has as its controlling terminal, as in a shell): what
`run --wait` and `logs -f` put on the screen, and Ctrl-C typed at the keyboard (issue 18)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.client import Client
from tests.system.cli_helpers import shared_daemon

# Runs the CLI as a shell would: a session of its own with the pty as its controlling
# terminal, so a typed ^C reaches it as SIGINT.
LAUNCHER = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
            "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from shared_daemon(tmp_path_factory.mktemp("cli-tty"))


class Terminal:
    """A CLI command on a pty of 100 columns; ``screen`` is what it printed there."""

    def __init__(self, d: Any, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        command = [sys.executable, "-c", LAUNCHER, "-m", "daemon", args[0], "--socket",
                   str(d.socket_path), *args[1:]]
        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.raw = b""
        self.ended = False

    @property
    def screen(self) -> str:
        return self.raw.decode(errors="replace").replace("\r\n", "\n")

    def _read(self, timeout: float) -> None:
        if self.ended or not select.select([self.master], [], [], timeout)[0]:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:              # EIO: every process holding the pty's other end is gone
            data = b""
        self.raw += data
        self.ended = not data

    def until(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            if self.ended or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the screen within {timeout}s: {self.screen!r}")
            self._read(max(0.0, deadline - time.monotonic()))
        return self.screen

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.ended and time.monotonic() < deadline:
            self._read(max(0.0, deadline - time.monotonic()))
        return self.proc.wait(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_run_wait_on_a_terminal(live: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    child = ("import os, sys, time\n"
             "print('to stdout', flush=True); print('to stderr', file=sys.stderr, flush=True)\n"
             f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
             "print('done'); sys.exit(5)\n")
    term = Terminal(live, "run", "--wait", "--", "python3", "-c", child)
    try:
        term.until("to stdout")
        screen = term.until("to stderr")       # both, while it runs
        assert "stablehand: process " in screen and "done" not in screen
        go.touch()
        term.until("done")
        assert term.finish() == 5
    finally:
        term.close()


def test_ctrl_c_typed_on_the_terminal_reaches_the_child(live: Any) -> None:
    term = Terminal(live, "run", "--wait", "--", "sh", "-c", "echo ready; exec sleep 30")
    try:
        term.until("ready")
        term.type(b"\x03")                     # ^C: the terminal sends SIGINT to the CLI
        term.until("sent SIGINT to process")
        assert term.finish() == 130             # sleep died of it: 128 + SIGINT
    finally:
        term.close()


def test_logs_follow_on_a_terminal(live: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    sh = Client(socket_path=live.socket_path)
    record = sh.start(["sh", "-c", f"seq 1 15; seq 1 3 >&2; while [ ! -e {go} ]; do sleep 0.02; done; "
                                   "echo the end"])
    term = Terminal(live, "logs", "-f", str(record["id"]))
    try:
        term.until("15\n")
        go.touch()
        term.until("the end")
        assert term.finish() == 0
    finally:
        term.close()
    lines = term.screen.splitlines()
    assert [line for line in lines if line.isdigit() and int(line) > 3] == [str(i) for i in range(6, 16)]
    assert lines.count("1") == 1 and lines.count("2") == 1    # stderr's, not stdout's (tail 10)
