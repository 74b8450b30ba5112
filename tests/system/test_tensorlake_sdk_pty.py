"""Tensorlake's own SDK (``tensorlake`` on PyPI) on Stablehand's PTY API, unchanged.

Skipped unless the SDK is importable (it is no dependency of the project): ``pip install
tensorlake`` to run it. The SDK is synchronous and threaded (websocket-client), so the
daemon is a real subprocess. It covers ``create_pty``, ``send_input``, ``resize``,
``disconnect``, ``connect_pty`` to a running session (also after a ``kill -9`` of the
daemon), ``wait`` for the exit code and ``kill``.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from tests.helpers import DaemonProcess, wait_for

sandbox = pytest.importorskip("tensorlake.sandbox")


class Screen:
    """What a PTY's on_data handler received (called from the SDK's reader thread)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def __call__(self, chunk: bytes) -> None:
        with self.lock:
            self.data.extend(chunk)

    def shows(self, text: bytes) -> bool:
        with self.lock:
            return text in self.data

    def wait(self, text: bytes) -> None:
        wait_for(lambda: self.shows(text), 15, f"{text!r} on the terminal")


def test_the_sdk_runs_a_shell_across_reconnects_and_a_daemon_crash(daemon: Any) -> None:
    d: DaemonProcess = daemon().start()
    box = sandbox.Sandbox("sbx1", proxy_url=d.url, api_key=d.token)
    screen = Screen()
    pty = box.create_pty("sh", ["-i"], env={"PS1": "$ ", "ENV": ""}, rows=24, cols=80,
                         on_data=screen)
    pty.send_input("echo $((6*7))\n")
    screen.wait(b"42\r\n")
    pty.resize(100, 30)
    pty.send_input("stty size\n")
    screen.wait(b"30 100\r\n")
    pty.disconnect()

    d.kill9()
    d.start()
    screen = Screen()
    again = box.connect_pty(pty.session_id, pty.token, on_data=screen)
    screen.wait(b"42\r\n")                       # its recent screen, replayed
    again.send_input("echo again-$((2+2))\n")
    screen.wait(b"again-4")
    again.send_input("exit 3\n")
    assert again.wait(15) == 3

    sleeper = box.create_pty("sleep", ["100"])
    sleeper.kill()
    assert sleeper.wait(15) == 128 + 9           # SIGKILL, as a shell's $? says it
    for handle in (pty, again, sleeper):
        handle.disconnect()
    box.close()
    del pty, again, sleeper
    gc.collect()   # the SDK drops a socket its server closed without closing it: collected here
