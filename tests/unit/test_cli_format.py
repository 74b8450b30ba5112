"""The CLI's pure parts: human units, the EXIT column, cutting, the environment a run sends."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.cli_caller import UsageError, child_env
from daemon.cli_format import age_or_duration, cut, error_head, exit_text, human_duration, ps_table
from daemon.cli_stream import exit_code_of, not_started_error

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.42, "0.4s"), (3, "3s"), (59.9, "59s"), (60, "1m"), (252, "4m12s"), (7380, "2h3m"),
    (7200, "2h"), (5 * 86400, "5d"), (5 * 86400 + 3 * 3600 + 59, "5d3h"), (-2, "0.0s")])
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def _record(**fields: Any) -> dict[str, Any]:
    base = {"id": 1, "state": "idle", "exitState": None, "error": None, "exitCode": None,
            "exitSignal": None, "argv": ["true"], "command": None, "createdAt": "2026-01-02T11:00:00.000Z",
            "startedAt": None, "completedAt": None}
    return {**base, **fields}


@pytest.mark.parametrize(("fields", "shown"), [
    ({"exitState": "success", "exitCode": 0}, "0"),
    ({"exitState": "failed", "exitCode": 3}, "3"),
    ({"exitState": "failed", "exitSignal": "SIGKILL"}, "SIGKILL"),
    ({"exitState": "canceled", "exitSignal": "SIGTERM"}, "SIGTERM (canceled)"),
    ({"exitState": "canceled", "exitCode": 0}, "0 (canceled)"),
    ({"exitState": "timeout", "exitSignal": "SIGKILL"}, "SIGKILL (timeout)"),
    ({"exitState": "canceled"}, "canceled"),
    ({"exitState": "failed", "error": "cannot execute '/x': No such file or directory"},
     "failed: cannot execute"),
    ({"exitState": "failed", "error": "not started: the registry is read-only"}, "failed: not started"),
    ({"state": "running"}, ""),
])
def test_exit_text(fields: dict[str, Any], shown: str) -> None:
    assert exit_text(_record(**fields)) == shown


def test_exit_codes_and_spawn_errors() -> None:
    assert exit_code_of(_record(exitState="failed", exitSignal="SIGINT")) == 130
    assert exit_code_of(_record(exitState="failed", exitCode=7)) == 7
    spawn = _record(exitState="failed", error="cannot execute 'x': Permission denied")
    assert exit_code_of(spawn) == 1 and not_started_error(spawn) == spawn["error"]
    assert not_started_error(_record(exitState="failed", exitCode=2)) is None


def test_age_and_duration() -> None:
    assert age_or_duration(_record(state="queued"), NOW) == "1h"
    assert age_or_duration(_record(state="running", startedAt="2026-01-02T11:59:57.000Z"), NOW) == "3s"
    assert age_or_duration(_record(startedAt="2026-01-02T11:00:00.000Z",
                                   completedAt="2026-01-02T11:04:12.500Z"), NOW) == "4m12s"
    assert age_or_duration(_record(exitState="failed"), NOW) == "-"


def test_cut_and_error_head() -> None:
    assert cut("abcdef", 10) == "abcdef"
    assert len(cut("x" * 50, 10)) == 10 and cut("x" * 50, 10).endswith(("…", "..."))
    assert error_head("killed by SIGKILL") == "killed by SIGKILL"


def test_ps_table_cuts_only_the_command() -> None:
    record = _record(argv=["echo", "y" * 300], ref="r" * 40, exitState="success", exitCode=0)
    lines = ps_table([record], NOW, 80).splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split() == ["ID", "REF", "STATE", "EXIT", "AGE/DURATION", "COMMAND"]
    assert "y" * 300 in ps_table([record], NOW, None)


def test_child_env() -> None:
    caller = {"HOME": "/home/me", "PWD": "/old", "NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "3",
              "WATCHDOG_USEC": "1", "STABLEHAND_TOKEN": "secret", "FOO": "foo"}
    assert child_env([], False, caller, "/work") == {"HOME": "/home/me", "PWD": "/work", "FOO": "foo"}
    assert child_env(["FOO", "A=b=c", "EMPTY="], True, caller, "/work") == {"FOO": "foo", "A": "b=c",
                                                                            "EMPTY": ""}
    assert child_env(["STABLEHAND_TOKEN"], True, caller, "/w") == {"STABLEHAND_TOKEN": "secret"}
    with pytest.raises(UsageError, match="BAR is not set"):
        child_env(["BAR"], False, caller, "/work")
    with pytest.raises(UsageError, match="name is missing"):
        child_env(["=x"], False, caller, "/work")


def test_every_option_has_help_and_times_say_their_unit() -> None:
    import argparse

    from daemon.cli import build_parser
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert all(choice.help for choice in commands._choices_actions)
    for name, parser in commands.choices.items():
        for action in parser._actions:
            assert action.help, (name, action.option_strings or action.dest)
            if action.dest in ("timeout", "grace"):
                assert "second" in action.help, (name, action.dest)
        with_json = any("--json" in action.option_strings for action in parser._actions)
        assert with_json == (name in ("run", "ps", "show", "kill", "stop", "wait", "events",
                                        "restart", "runs")), name
