"""What `logs`, `ps`, `show`, `events` and `--version` show a person (issue 18)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import daemon
from daemon.client import Client
from tests.helpers import alive, wait_for
from tests.system.cli_helpers import cli, shared_daemon, watch


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from shared_daemon(tmp_path_factory.mktemp("cli-views"))


def _ran(live: Any, *argv: str, **options: Any) -> dict[str, Any]:
    """Start a process through the API and wait for it to be idle."""
    sh = Client(socket_path=live.socket_path)
    return sh.wait(sh.start(list(argv), **options)["id"], timeout=20)


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "--version"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == f"stablehand {daemon.__version__}\n"


def test_logs_prints_both_streams_and_tails_lines(live: Any) -> None:
    script = "for i in $(seq 1 30); do echo out$i; echo err$i >&2; done; printf 'no newline'"
    process_id = str(_ran(live, "sh", "-c", script)["id"])

    everything = cli(live, "logs", process_id)
    assert everything.returncode == 0
    assert everything.stdout == "".join(f"out{i}\n" for i in range(1, 31)) + "no newline"
    assert everything.stderr == "".join(f"err{i}\n" for i in range(1, 31))

    tail = cli(live, "logs", "--tail", "3", process_id)
    assert (tail.stdout, tail.stderr) == ("out29\nout30\nno newline", "err28\nerr29\nerr30\n")
    only_err = cli(live, "logs", "--stderr", "--tail", "2", process_id)
    assert (only_err.stdout, only_err.stderr) == ("err29\nerr30\n", "")   # one stream: to stdout
    only_out = cli(live, "logs", "--stdout", "--tail", "0", process_id)
    assert (only_out.returncode, only_out.stdout) == (0, "")
    assert cli(live, "logs", "--tail", "1000", "--stdout", process_id).stdout == everything.stdout

    unknown = cli(live, "logs", "999999")
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_logs_follow_starts_from_the_tail(live: Any, tmp_path: Any) -> None:
    go = tmp_path / "go"
    sh = Client(socket_path=live.socket_path)
    record = sh.start(["sh", "-c", f"seq 1 50; while [ ! -e {go} ]; do sleep 0.02; done; echo after"])
    follow = watch(live, "logs", "-f", "--stdout", str(record["id"]))
    try:
        follow.until("stdout", "50\n")
        go.touch()
        assert follow.finish() == 0
    finally:
        follow.close()
    assert follow.text("stdout") == "".join(f"{i}\n" for i in range(41, 51)) + "after\n"
    replay = cli(live, "logs", "-f", "--from-start", "--stdout", str(record["id"]))
    assert replay.stdout.startswith("1\n2\n") and replay.stdout.endswith("50\nafter\n")


PS_LINE = re.compile(r"^(?P<id>\d+)\s+(?P<ref>\S+)\s+(?P<state>\S+)\s+(?P<exit>.+?)\s+"
                     r"(?P<time>-|\d+(\.\d)?s|\d+m(\d+s)?|\d+h(\d+m)?|\d+d(\d+h)?)\s+(?P<command>.+)$")


def _rows(stdout: str) -> dict[int, dict[str, str]]:
    lines = stdout.splitlines()
    assert lines[0].split() == ["ID", "REF", "STATE", "EXIT", "AGE/DURATION", "COMMAND"]
    rows = {}
    for line in lines[1:]:
        match = PS_LINE.match(line)
        assert match, line
        rows[int(match["id"])] = match.groupdict()
    return rows


def test_ps_columns_filters_and_footer(live: Any) -> None:
    sh = Client(socket_path=live.socket_path)
    ok = _ran(live, "true", ref="ps-ok")["id"]
    three = _ran(live, "sh", "-c", "exit 3", ref="ps-three")["id"]
    missing = _ran(live, "/no/such/program")["id"]
    killed = sh.start(["sleep", "30"])["id"]
    sh.kill(killed)
    sh.wait(killed, timeout=20)
    long_command = "echo " + "x" * 200
    running = sh.start(["sh", "-c", f"{long_command}; exec sleep 30"], ref="a-very-long-ref-" + "r" * 40)
    try:
        env = {**os.environ, "COLUMNS": "100"}
        table = cli(live, "ps", env=env)
        assert table.returncode == 0, table.stderr
        assert all(len(line) <= 100 for line in table.stdout.splitlines()), table.stdout
        rows = _rows(table.stdout)
        assert rows[ok]["exit"] == "0" and rows[ok]["ref"] == "ps-ok" and rows[ok]["state"] == "idle"
        assert rows[three]["exit"] == "3" and rows[three]["command"] == "sh -c 'exit 3'"
        assert rows[missing]["exit"] == "failed: cannot execute" and rows[missing]["time"] == "-"
        assert rows[killed]["exit"] == "SIGTERM (canceled)"
        assert rows[running["id"]]["state"] == "running"
        cut_mark = ("…", "...")                   # "..." where the terminal cannot show "…"
        assert rows[running["id"]]["command"].endswith(cut_mark)
        assert rows[running["id"]]["ref"].endswith(cut_mark)

        failed = _rows(cli(live, "ps", "--state", "failed").stdout)
        assert {three, missing} <= set(failed) and not {ok, killed} & set(failed)
        assert set(_rows(cli(live, "ps", "--state", "canceled").stdout)) == {killed}
        assert set(_rows(cli(live, "ps", "--state", "running").stdout)) == {running["id"]}

        # Not a terminal and no COLUMNS: nothing is cut.
        uncut = cli(live, "ps", env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
        assert long_command in uncut.stdout

        total = len(sh.list(limit=1000)["processes"])
        page = cli(live, "ps", "--limit", "2")
        assert len(_rows(page.stdout)) == 2
        second_id = sorted(_rows(page.stdout))[0]
        assert page.stderr == f"{total - 2} more; use --limit N, --cursor {second_id} or --all\n"
        assert len(_rows(cli(live, "ps", "--all").stdout)) == total
        assert cli(live, "ps", "--limit", str(total)).stderr == ""   # nothing more: no footer

        as_json = json.loads(cli(live, "ps", "--limit", "2", "--json").stdout)
        assert as_json == sh.list(limit=2)
    finally:
        sh.kill(running["id"])
        sh.wait(running["id"], timeout=20)


def test_show_is_readable(live: Any) -> None:
    record = _ran(live, "sh", "-c", "echo 'a b'; exit 3", ref="show-me", timeout=60)
    shown = cli(live, "show", str(record["id"]))
    assert shown.returncode == 0
    fields = {label.strip(): value for label, _, value in
              (line.partition(": ") for line in shown.stdout.splitlines())}
    assert fields["argv"] == "sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'"
    assert fields["exit code"] == "3" and fields["exit state"] == "failed"
    assert fields["output truncated"] == "no" and fields["timeout"] == "60s"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(.+ ago\)", fields["created"])
    assert re.fullmatch(r"\d+(\.\d)?s", fields["ran for"])
    assert "[" not in shown.stdout and "False" not in shown.stdout and "None" not in shown.stdout
    assert json.loads(cli(live, "show", "--json", str(record["id"])).stdout) == \
        Client(socket_path=live.socket_path).get(record["id"])


EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}\s+(?P<id>\d+)\s+(?P<ref>\S+)\s+"
                        r"(?P<state>\S+)\s+(?P<exit>\S+)\s+(?P<command>.+)$")


def test_events_lines(live: Any) -> None:
    events = watch(live, "events")
    try:
        # Start throwaway processes until the stream shows one: then it is surely subscribed.
        for _ in range(100):
            _ran(live, "true")
            try:
                events.until("stdout", "\n", timeout=0.2)
                break
            except AssertionError:
                continue
        record = _ran(live, "sh", "-c", "exit 4", ref="ev-job")
        events.until("stdout", "ev-job")
        seen = events.until("stdout", "failed")
    finally:
        events.close()
    mine = [m.groupdict() for line in seen.splitlines() if (m := EVENT_LINE.match(line))
            and int(m["id"]) == record["id"]]
    assert [(e["ref"], e["state"], e["exit"], e["command"]) for e in mine] == [
        ("ev-job", "running", "-", "sh -c 'exit 4'"), ("ev-job", "idle", "failed", "sh -c 'exit 4'")]


def test_follow_events_and_run_wait_say_so_when_the_daemon_goes_away(daemon: Any) -> None:
    d = daemon("--shutdown", "detach").start()     # the children outlive the daemon
    sh = Client(socket_path=d.socket_path)
    record = sh.start(["sh", "-c", "echo started; exec sleep 30"])
    follow = watch(d, "logs", "-f", str(record["id"]))
    events = watch(d, "events")
    run = watch(d, "run", "--wait", "--", "sh", "-c", "echo attached; exec sleep 30")
    pids = [record["pid"]]
    try:
        follow.until("stdout", "started")
        run.until("stdout", "attached")
        attached_id = int(re.findall(r"process (\d+) running", run.text("stderr"))[0])
        pids.append(sh.get(attached_id)["pid"])
        for _ in range(100):                       # until the events stream surely listens
            sh.wait(sh.start(["true"])["id"], timeout=20)
            try:
                events.until("stdout", "\n", timeout=0.2)
                break
            except AssertionError:
                continue
        d.stop()
        assert follow.finish() == 69
        assert events.finish() == 69
        assert run.finish() == 69
    finally:
        for watched in (follow, events, run):
            watched.close()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: not alive(pid), what="a detached child to be gone")
    assert re.search(rf"stablehand: the daemon went away while following process {record['id']}",
                     follow.text("stderr")), follow.text("stderr")
    assert "stablehand: the event stream ended" in events.text("stderr")
    assert f"lost the daemon while waiting for process {attached_id}" in run.text("stderr")
