"""Replies that pile up past PAUSE_AT pause a connection's requests; they must resume.

The keeper queues the replies to one read's requests and sends them together. A reply
big enough to pass PAUSE_AT stops the reading of that read's remaining requests; when
the socket then takes everything at once, nothing would wake the keeper for the
requests left in its buffer, and the daemon, which has no timeout on a request, would
wait for ever. drive_backpressure.py runs a real keeper object whose socket takes far
more than PAUSE_AT (SO_SNDBUFFORCE, as root), in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_SNDBUFFORCE needs root")
def test_requests_after_a_reply_bigger_than_pause_at_are_answered(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.keeper.drive_backpressure", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, 2, 3], "a request was left unanswered in the keeper"
