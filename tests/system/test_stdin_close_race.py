"""A stdin write waiting on a full pipe, then the pipe closed under it (attack F1).

The waiting write's fd was registered with the loop when the close freed it; the next
pipe reused the number and uvloop aborted the daemon (SIGABRT), orphaning every child.
Reproduced as reported, against the real daemon on uvloop.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, queued_on_stdin, wait_for
from tests.system.test_daemon import call


def _post_stdin(daemon: DaemonProcess, process_id: int, data: bytes, result: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{daemon.url}/processes/{process_id}/stdin", data=data, method="POST",
        headers={"Content-Type": "application/octet-stream", **daemon.headers()})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            result["status"] = response.status
    except urllib.error.HTTPError as exc:
        result["status"] = exc.code


def test_closing_stdin_under_a_waiting_write_keeps_the_daemon_up(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "state").start()
    try:
        status, sleeper = call(daemon, "POST", "/processes", {"argv": ["sleep", "1000"], "stdin": "pipe"})
        assert status == 201
        result: dict[str, Any] = {}
        writer = threading.Thread(target=_post_stdin, args=(daemon, sleeper["id"], b"A" * (1 << 20), result))
        writer.start()
        # sleep never reads: the write waits once the pipe is full.
        wait_for(lambda: queued_on_stdin(sleeper["pid"]) >= 65536, 10, "the pipe to fill")
        assert writer.is_alive()
        status, _ = call(daemon, "POST", f"/processes/{sleeper['id']}/stdin/close")
        assert status == 204
        writer.join(30)
        assert result["status"] in (409, 204, 200)
        for _ in range(5):  # new pipes reuse the freed numbers
            status, cat = call(daemon, "POST", "/processes", {"argv": ["cat"], "stdin": "pipe"})
            assert status == 201
            status, _ = call(daemon, "POST", f"/processes/{cat['id']}/stdin/close")
            assert status == 204
        status, record = call(daemon, "POST", "/processes", {"argv": ["true"]})
        assert status == 201
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        call(daemon, "POST", f"/processes/{sleeper['id']}/signals/kill")
    finally:
        assert daemon.stop() == 0, daemon.log()
