"""The managed-process CLI's pure parts: run's options, ids or names, the ps and runs tables."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import pytest

from daemon.cli import build_parser
from daemon.cli_caller import UsageError
from daemon.cli_format import ps_table, runs_table
from daemon.cli_managed import run_options

NOW = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)


def run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv, "--", "sleep", "1"])


def test_run_without_managed_options_adds_nothing() -> None:
    assert run_options(run_args()) == {}


def test_run_options_become_the_apis_fields() -> None:
    assert run_options(run_args("--name", "web", "--restart", "on-failure", "--max-restarts", "3",
                                "--health-http", ":8080/healthz")) == {
        "name": "web", "restart": {"policy": "on_failure", "maxRestarts": 3},
        "health_check": {"type": "http", "port": 8080, "path": "/healthz"}}
    assert run_options(run_args("--restart", "always", "--health-tcp", "localhost:5432")) == {
        "restart": {"policy": "always", "maxRestarts": None},
        "health_check": {"type": "tcp", "port": 5432}}
    assert run_options(run_args("--max-restarts", "2", "--health-exec", "test -e /tmp/ok")) == {
        "restart": {"policy": "on_failure", "maxRestarts": 2},
        "health_check": {"type": "exec", "command": ["/bin/sh", "-c", "test -e /tmp/ok"]}}
    assert run_options(run_args("--health-http", ":80"))["health_check"]["path"] == "/"


@pytest.mark.parametrize("argv", [
    ("--restart", "sometimes"), ("--health-http", "example.com:80/x"), ("--health-tcp", ":0"),
    ("--health-tcp", "5432x"), ("--health-exec", " "), ("--max-restarts", "-1"),
])
def test_bad_run_options_are_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        run_options(run_args(*argv))


def test_only_one_health_check() -> None:
    with pytest.raises(SystemExit):
        run_args("--health-tcp", ":1", "--health-exec", "true")


def test_ids_and_names() -> None:
    parser = build_parser()
    assert parser.parse_args(["restart", "12"]).id == 12
    assert parser.parse_args(["runs", "web"]).id == "web"
    assert parser.parse_args(["logs", "web"]).id == "web"
    assert parser.parse_args(["kill", "7"]).id == 7


def managed(id_: int, name: str, **info: Any) -> dict[str, Any]:
    return {"id": id_, "name": name, "ref": None, "state": "running", "argv": ["srv"],
            "startedAt": "2026-12-03T11:59:00Z",
            "managed": {"status": "running", "restartCount": 0, "healthStatus": "disabled", **info}}


def test_ps_adds_name_restarts_and_health_only_when_a_record_is_managed() -> None:
    plain = {"id": 1, "ref": "job", "state": "idle", "exitState": "success", "exitCode": 0,
             "argv": ["true"]}
    assert ps_table([plain], NOW, None).splitlines()[0].split() == \
        ["ID", "REF", "STATE", "EXIT", "AGE/DURATION", "COMMAND"]
    lines = ps_table([managed(3, "web", restartCount=2, healthStatus="healthy",
                              status="backing_off"), managed(2, "db"), plain], NOW, None).splitlines()
    assert lines[0].split() == ["ID", "NAME", "REF", "STATE", "RESTARTS", "HEALTH", "EXIT",
                                "AGE/DURATION", "COMMAND"]
    assert lines[1].split()[:6] == ["3", "web", "-", "running/backing_off", "2", "healthy"]
    assert lines[2].split()[:6] == ["2", "db", "-", "running", "0", "-"]
    assert lines[3].split()[:6] == ["1", "-", "job", "idle", "-", "-"]


def test_runs_table() -> None:
    lines = runs_table([
        {"run": 1, "pid": 100, "startedAt": "2026-12-03T11:00:00Z", "endedAt": "2026-12-03T11:00:05Z",
         "exitCode": 1, "exitSignal": None, "reason": "exited"},
        {"run": 2, "pid": 101, "startedAt": "2026-12-03T11:00:06Z", "endedAt": None,
         "exitCode": None, "exitSignal": None, "reason": None},
    ]).splitlines()
    assert lines[0].split() == ["RUN", "PID", "STARTED", "ENDED", "EXIT", "REASON"]
    first, second = lines[1].split(), lines[2].split()
    assert (first[0], first[1], first[-2], first[-1]) == ("1", "100", "1", "exited")
    assert (second[0], second[1], second[-3:]) == ("2", "101", ["-", "-", "-"])
