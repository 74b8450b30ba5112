"""Issue 21 from the user's side: ``stablehand stop --all | --ref R | --state S`` and the
Python clients' ``stop_many`` and ``kill(wait=)``, against a live daemon subprocess."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.client import ApiError, AsyncClient, Client
from tests.helpers import IGNORE_TERM, alive, wait_for

from .cli_helpers import cli


@pytest.fixture
def live(daemon: Any) -> Any:
    return daemon("--grace", "2", "--max-concurrent", "3").start()


def started(live: Any, *args: str) -> int:
    result = cli(live, "run", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_stop_by_ref_prints_one_line_per_stopped_process(live: Any) -> None:
    ids = [started(live, "--ref", "batch", "--", "sleep", "300") for _ in range(2)]
    other = started(live, "--ref", "keep", "--", "sleep", "300")
    with Client(socket_path=live.socket_path) as sh:
        pids = [sh.get(i)["pid"] for i in ids]

    result = cli(live, "stop", "--ref", "batch")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{i} idle canceled" for i in ids]
    assert not [pid for pid in pids if alive(pid)], "stop returned once the processes were gone"
    assert json.loads(cli(live, "show", str(other), "--json").stdout)["state"] == "running"
    assert cli(live, "stop", "--ref", "nothing-has-this").stdout == ""
    assert cli(live, "stop", "--ref", "nothing-has-this").returncode == 0
    assert cli(live, "stop", "--all").returncode == 0


def test_stop_all_cancels_the_queue_then_stops_the_running(live: Any) -> None:
    running = [started(live, "--", "sleep", "300") for _ in range(3)]
    queued = [started(live, "--", "sleep", "301") for _ in range(2)]

    result = cli(live, "stop", "--all", "--grace", "1", "--json")

    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["processes"]
    assert [r["id"] for r in records] == queued + running, "the queue first: none of it started"
    assert all(r["state"] == "idle" and r["exitState"] == "canceled" for r in records)
    assert [r["pid"] for r in records[:2]] == [None, None]
    with Client(socket_path=live.socket_path) as sh:
        assert sh.list(state="running")["processes"] == [] and sh.list(state="queued")["processes"] == []


def test_stop_by_state_and_a_straggler_killed_after_the_grace(live: Any) -> None:
    stubborn = started(live, "--", *IGNORE_TERM)
    with Client(socket_path=live.socket_path) as sh:
        wait_for(lambda: b"ready" in sh.output(stubborn), what="the SIGTERM handler")
        pid = sh.get(stubborn)["pid"]

    result = cli(live, "stop", "--state", "running", "--grace", "0.3")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(stubborn), "idle", "canceled"]
    assert not alive(pid)
    with Client(socket_path=live.socket_path) as sh:
        assert sh.get(stubborn)["exitSignal"] == "SIGKILL"


def test_stop_one_id_still_works(live: Any) -> None:
    process_id = started(live, "--", "sleep", "300")
    result = cli(live, "stop", str(process_id), "--signal", "SIGINT", "--grace", "1")
    assert result.returncode == 0 and result.stdout.strip() == f"{process_id} terminating"
    assert cli(live, "wait", str(process_id)).returncode == 128 + 2


@pytest.mark.parametrize(("args", "says"), [
    ((), "stop needs an ID, or one of --all"),
    (("1", "--all"), "stop needs an ID, or one of --all"),
    (("--ref", "x", "--signal", "SIGINT"), "--signal goes with an ID"),
    (("--all", "--grace", "-1"), "--grace must be 0 to 86400"),
])
def test_stop_usage_errors(live: Any, args: tuple[str, ...], says: str) -> None:
    result = cli(live, "stop", *args)
    assert result.returncode == 2 and says in result.stderr


def test_stop_with_two_selectors_is_refused_by_argparse(live: Any) -> None:
    result = cli(live, "stop", "--all", "--ref", "x")
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_stop_with_an_unknown_id_selector_in_the_client(live: Any) -> None:
    keep = started(live, "--", "sleep", "300")
    with Client(socket_path=live.socket_path) as sh:
        with pytest.raises(ApiError) as raised:
            sh.stop_many(ids=[keep, 987654])
        assert raised.value.status == 404 and "987654" in raised.value.message
        assert sh.get(keep)["state"] == "running"
        records = sh.stop_many(ids=[keep], grace=0)
        assert [(r["id"], r["state"]) for r in records] == [(keep, "idle")]


def test_the_sync_client_kill_with_wait(live: Any) -> None:
    with Client(socket_path=live.socket_path) as sh:
        record = sh.start(["sleep", "300"])
        final = sh.kill(record["id"], wait=10)
        assert final["state"] == "idle" and final["exitSignal"] == "SIGTERM"
        assert not alive(record["pid"])
        stubborn = sh.start(IGNORE_TERM, grace=30)
        wait_for(lambda: b"ready" in sh.output(stubborn["id"]), what="the SIGTERM handler")
        assert sh.kill(stubborn["id"], wait=0.2)["state"] == "terminating"   # the 408's record
        assert sh.stop_many(ids=[stubborn["id"]], grace=0)[0]["exitSignal"] == "SIGKILL"


async def test_the_async_client_stop_many_and_kill_with_wait(live: Any) -> None:
    async with AsyncClient(socket_path=live.socket_path) as sh:
        first = await sh.start(["sleep", "300"], ref="async")
        second = await sh.start(["sleep", "300"], ref="async")
        records = await sh.stop_many(ref="async", grace=1)
        assert [r["id"] for r in records] == [first["id"], second["id"]]
        assert {r["state"] for r in records} == {"idle"}
        assert await sh.stop_many(state="queued") == []
        third = await sh.start(["sleep", "300"])
        final = await sh.kill(third["id"], wait=10)
        assert final["state"] == "idle" and not alive(third["pid"])
