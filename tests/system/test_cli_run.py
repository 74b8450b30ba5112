"""`stablehand run` as a person uses it: here, with my environment, saying what failed,
streaming the output, Ctrl-C reaching the child (issue 18)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.client import Client
from tests.helpers import alive, wait_for
from tests.system.cli_helpers import cli, shared_daemon, watch


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from shared_daemon(tmp_path_factory.mktemp("cli-run"))


def _id_from(stderr: str) -> int:
    match = re.search(r"process (\d+) (running|queued)", stderr)
    assert match, stderr
    return int(match.group(1))


def test_run_happens_in_the_callers_directory_with_the_callers_environment(live: Any,
                                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "data.txt").write_text("read from a relative path\n")
    (work / "job.py").write_text(
        "import os\n"
        "print(open('data.txt').read().strip())\n"
        "print(os.environ.get('CALLER_VAR'), os.environ.get('OTHER_VAR'))\n"
        "print('NOTIFY_SOCKET' in os.environ, 'STABLEHAND_EXTRA' in os.environ, os.environ['PWD'])\n")
    env = {**os.environ, "CALLER_VAR": "from the caller", "OTHER_VAR": "other", "PWD": str(work),
           "NOTIFY_SOCKET": "/run/caller/notify", "STABLEHAND_EXTRA": "x"}

    result = cli(live, "run", "--wait", "--", "python3", "job.py", cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["read from a relative path", "from the caller other",
                                          f"False False {work}"]

    # A relative --cwd is taken from the caller's directory.
    here = cli(live, "run", "--wait", "--cwd", "sub", "--", "python3", "-c",
               "import os; print(os.getcwd())", cwd=work, env=env)
    assert here.returncode == 0 and here.stdout == f"{work / 'sub'}\n", here.stderr

    # --clean-env sends only what --env names: KEY=VALUE sets, KEY passes the caller's value.
    clean = cli(live, "run", "--wait", "--clean-env", "--env", "CALLER_VAR", "--env", "SET_VAR=1=2",
                "--", "python3", "-c",
                "import os; print(os.environ.get('CALLER_VAR'), os.environ.get('OTHER_VAR'), "
                "os.environ.get('SET_VAR'))", cwd=work, env=env)
    assert clean.returncode == 0 and clean.stdout == "from the caller None 1=2\n", clean.stderr

    # --env KEY with KEY unset is an error, before anything is started.
    before = Client(socket_path=live.socket_path).list(limit=1)["processes"][0]["id"]
    unset = cli(live, "run", "--env", "NOT_SET_ANYWHERE", "--", "true", cwd=work, env=env)
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    assert Client(socket_path=live.socket_path).list(limit=1)["processes"][0]["id"] == before


def test_a_program_that_cannot_start_says_why(live: Any, tmp_path: Path) -> None:
    started = cli(live, "run", "--", "/no/such/program")
    assert started.returncode == 1
    assert started.stdout.strip().isdigit()   # the id, for `show` and `logs`
    assert "failed: cannot execute '/no/such/program': No such file or directory" in started.stderr

    waited = cli(live, "run", "--wait", "--", "/no/such/program")
    assert waited.returncode == 1 and waited.stdout == ""
    assert re.search(r"process \d+ failed: cannot execute '/no/such/program'", waited.stderr)

    missing_dir = cli(live, "run", "--wait", "--cwd", "gone", "--", "true", cwd=tmp_path)
    assert missing_dir.returncode == 1
    assert f"cannot change to directory '{tmp_path / 'gone'}'" in missing_dir.stderr


def test_run_wait_streams_both_streams_as_they_come_and_exits_with_the_code(live: Any,
                                                                           tmp_path: Path) -> None:
    go = tmp_path / "go"
    child = ("import os, sys, time\n"
             "print('out-1', flush=True); print('err-1', file=sys.stderr, flush=True)\n"
             f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
             "print('out-2'); print('err-2', file=sys.stderr); sys.exit(3)\n")
    run = watch(live, "run", "--wait", "--", "python3", "-c", child)
    try:
        run.until("stdout", "out-1")          # while the child is still running
        run.until("stderr", "err-1")
        assert run.proc.poll() is None
        process_id = _id_from(run.text("stderr"))
        go.touch()
        assert run.finish() == 3
    finally:
        run.close()
    assert run.text("stdout") == "out-1\nout-2\n"
    assert run.text("stderr").splitlines()[1:] == ["err-1", "err-2"]
    assert run.text("stderr").splitlines()[0] == f"stablehand: process {process_id} running"


TRAPS_SIGINT = ("import signal, time\n"
                "signal.signal(signal.SIGINT, lambda *_: print('child got SIGINT', flush=True))\n"
                "print('ready', flush=True)\n"
                "while True: time.sleep(1)\n")


def test_ctrl_c_goes_to_the_child_and_a_second_one_stops_it(live: Any) -> None:
    run = watch(live, "run", "--wait", "--", "python3", "-c", TRAPS_SIGINT)
    try:
        run.until("stdout", "ready")
        process_id = _id_from(run.text("stderr"))
        pid = Client(socket_path=live.socket_path).get(process_id)["pid"]

        run.proc.send_signal(signal.SIGINT)
        run.until("stdout", "child got SIGINT")
        run.until("stderr", "Ctrl-C again to stop it")
        assert Client(socket_path=live.socket_path).get(process_id)["state"] == "running"
        assert run.proc.poll() is None and alive(pid)

        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 128 + signal.SIGTERM
    finally:
        run.close()
    assert f"stopping process {process_id}" in run.text("stderr")
    record = Client(socket_path=live.socket_path).get(process_id)
    assert (record["exitState"], record["exitSignal"]) == ("canceled", "SIGTERM")
    wait_for(lambda: not alive(pid), what="the child to be gone")


def test_ctrl_c_ends_a_child_that_does_not_trap_it(live: Any) -> None:
    run = watch(live, "run", "--wait", "--", "sh", "-c", "echo ready; exec sleep 30")
    try:
        run.until("stdout", "ready")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 128 + signal.SIGINT
    finally:
        run.close()
    record = Client(socket_path=live.socket_path).get(_id_from(run.text("stderr")))
    assert (record["exitState"], record["exitSignal"]) == ("failed", "SIGINT")
