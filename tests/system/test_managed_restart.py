"""Managed processes across a daemon restart: backoffs re-armed, runs taken up."""

from __future__ import annotations

from typing import Any

from daemon.model import iso_to_epoch
from tests.helpers import wait_for
from tests.system.test_daemon import call


def _get(d: Any, ref: int | str) -> Any:
    status, body = call(d, "GET", f"/processes/{ref}")
    assert status == 200, body
    return body


def test_a_daemon_restart_during_backoff_rearms_the_timer(daemon: Any) -> None:
    d = daemon().start()
    status, record = call(d, "POST", "/processes", {
        "command": "exit 1", "name": "flaky",
        "restart": {"policy": "on_failure", "maxRestarts": 1, "initialBackoffMs": 1500,
                    "maxBackoffMs": 1500}})
    assert status == 201, record
    wait_for(lambda: _get(d, "flaky")["managed"]["status"] == "backing_off", 10, "the backoff")
    due = iso_to_epoch(_get(d, "flaky")["managed"]["nextRestartAt"])
    d.kill9()
    d.start()
    assert _get(d, "flaky")["managed"]["status"] == "backing_off"
    status, final = call(d, "GET", "/processes/flaky/wait?timeout=20")
    assert status == 200 and final["managed"]["restartCount"] == 1
    assert final["error"] == "exited with status 1; gave up after 1 restarts"
    _, runs = call(d, "GET", f"/processes/{record['id']}/runs")
    assert [r["run"] for r in runs["runs"]] == [1, 2]
    assert iso_to_epoch(runs["runs"][1]["startedAt"]) >= due - 0.01   # not before it was due


def test_a_running_managed_process_is_taken_up_and_still_restarts(daemon: Any) -> None:
    d = daemon().start()
    _, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"], "name": "svc",
                                               "restart": {"policy": "always"}})
    d.kill9()
    d.start()
    status, after = call(d, "POST", "/processes/svc/restart")
    assert status == 200, after
    assert after["managed"]["run"] == 2 and after["pid"] != record["pid"]
    assert call(d, "POST", "/processes/svc/signals/kill")[0] == 200
    assert call(d, "GET", "/processes/svc/wait?timeout=20")[1]["exitState"] == "canceled"
