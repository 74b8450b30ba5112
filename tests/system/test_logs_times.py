"""``stablehand logs`` with arrival times: both streams in the order their lines arrived,
``--timestamps``, ``--since`` (issue 18).

These need the keeper wired into the daemon (it writes the arrival index the
daemon reads); ``_index`` asserts the index is there before anything relies on it.
The child writes one line at a time, each on a line of its stdin, and the test
waits for each line's index record before asking for the next, so the order and
the times are the test's, not the scheduler's.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from daemon.client import Client
from daemon.keeper.pump import OutputIndex
from daemon.output_times import iso_ms
from tests.helpers import wait_for
from tests.system.cli_helpers import cli, cli_args

# Each line of stdin lets the child write the next of these (stream, text).
STEPS = [("stdout", "one"), ("stderr", "err1"), ("stdout", "two"), ("stderr", "err2"),
         ("stdout", "three")]
CHILD = ["python3", "-c",
         "import sys\n"
         f"for stream, text in {STEPS!r}:\n"
         "    sys.stdin.readline()\n"
         "    out = sys.stdout if stream == 'stdout' else sys.stderr\n"
         "    out.write(text + '\\n'); out.flush()\n"]


def _index(d: Any, process_id: int, stream: str) -> OutputIndex:
    path = str(d.state_dir / "output" / f"{process_id}.{stream}")
    assert os.path.exists(path + ".idx"), "no arrival index: is the keeper wired into the daemon?"
    return OutputIndex.load(path)


def _stepped(d: Any) -> tuple[int, dict[str, int]]:
    """A finished CHILD, and for each line the unix ms its index record says it arrived by."""
    sh = Client(socket_path=d.socket_path)
    process_id = sh.start(CHILD, stdin="pipe")["id"]
    sizes = {"stdout": 0, "stderr": 0}
    arrived: dict[str, int] = {}
    last_ms = 0
    for stream, text in STEPS:
        def clock_moved(after: int = last_ms) -> bool:
            return time.time() * 1000 > after + 2

        def recorded(stream: str = stream) -> bool:   # (the index is made at the first byte)
            return os.path.exists(d.state_dir / "output" / f"{process_id}.{stream}.idx") and \
                _index(d, process_id, stream).ends[-1:] == [sizes[stream]]

        wait_for(clock_moved, what="the clock to move on")
        sh.write_stdin(process_id, b"\n")
        sizes[stream] += len(text) + 1
        wait_for(recorded, what=f"the index record of {text!r}")
        last_ms = arrived[text] = _index(d, process_id, stream).times[-1]
    # The child ends by itself after its last line (closing its stdin could find it gone).
    assert sh.wait(process_id, timeout=20)["exitState"] == "success"
    return process_id, arrived


def _merged(d: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with its stderr into the same pipe as its stdout, as on a terminal."""
    return subprocess.run(cli_args(d, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=30)


def test_logs_prints_both_streams_in_arrival_order_with_timestamps_and_since(daemon: Any) -> None:
    d = daemon().start()
    process_id, arrived = _stepped(d)
    ident = str(process_id)

    shown = _merged(d, "logs", ident)
    assert shown.returncode == 0
    assert shown.stdout == "one\nerr1\ntwo\nerr2\nthree\n"

    shown = _merged(d, "logs", "--timestamps", ident)
    assert shown.stdout == "".join(f"{iso_ms(arrived[text])} {text}\n" for _, text in STEPS)
    apart = cli(d, "logs", "-t", ident)          # each stream still to its own fd
    assert apart.stdout == "".join(f"{iso_ms(arrived[t])} {t}\n" for s, t in STEPS if s == "stdout")
    assert apart.stderr == "".join(f"{iso_ms(arrived[t])} {t}\n" for s, t in STEPS if s == "stderr")

    since = iso_ms(arrived["two"])                # "two" arrived then: it and what came after
    assert _merged(d, "logs", "--since", since, ident).stdout == "two\nerr2\nthree\n"
    assert _merged(d, "logs", "--since", f"{arrived['two'] / 1000:.3f}", ident).stdout == \
        "two\nerr2\nthree\n"
    assert _merged(d, "logs", "--since", "1h", ident).stdout == "one\nerr1\ntwo\nerr2\nthree\n"
    assert _merged(d, "logs", "--since", "2999-01-01T00:00:00Z", ident).stdout == ""
    assert _merged(d, "logs", "--since", since, "--tail", "1", ident).stdout == "err2\nthree\n"
    assert cli(d, "logs", "--stderr", "--since", since, ident).stdout == "err2\n"
    assert _merged(d, "logs", "-f", "--since", since, ident).stdout == "two\nerr2\nthree\n"


def test_logs_since_that_means_nothing_is_a_usage_error(daemon: Any) -> None:
    d = daemon().start()
    process_id = Client(socket_path=d.socket_path).start(["true"])["id"]
    shown = cli(d, "logs", "--since", "last tuesday", str(process_id))
    assert shown.returncode == 2
    assert "--since 'last tuesday': give a duration ago (30s, 10m, 1h30m, 2d)" in shown.stderr
    shown = cli(d, "logs", "-f", "--from-start", "--since", "10m", str(process_id))
    assert shown.returncode == 2 and "--from-start" in shown.stderr
