"""The daemon's log as an operator reads it: one JSON event per line, stable dotted names,
the process id on every process event; HTTP requests only at debug level."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from tests.helpers import DaemonProcess, wait_for
from tests.system.test_daemon import call

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def events(d: DaemonProcess) -> list[dict[str, Any]]:
    """Every complete line of the daemon's log, parsed; one that is not a JSON object fails."""
    parsed = []
    for line in d.log().split("\n")[:-1]:  # the last piece may be a line being written
        if line.strip():
            event = json.loads(line)
            assert isinstance(event, dict), line
            parsed.append(event)
    return parsed


def start_kill_and_wait(d: DaemonProcess) -> int:
    status, created = call(d, "POST", "/processes", {"argv": ["sleep", "30"]})
    assert status == 201
    assert call(d, "POST", f"/processes/{created['id']}/signals/kill", {})[0] == 200
    assert call(d, "GET", f"/processes/{created['id']}/wait?timeout=10")[1]["state"] == "idle"
    return int(created["id"])


def test_a_start_and_a_kill_log_one_json_event_per_line(daemon: Any) -> None:
    d = daemon().start()
    process_id = start_kill_and_wait(d)
    wait_for(lambda: any(e["event"] == "process.exited" for e in events(d)), what="process.exited")
    lines = events(d)
    for event in lines:
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", event["event"]), event
        assert event["level"] in {"debug", "info", "warning", "error"}
        assert ISO_UTC.match(event["timestamp"]), event
    mine = [e for e in lines if e.get("process_id") == process_id]
    assert [e["event"] for e in mine] == ["process.created", "process.spawned",
                                          "process.stopping", "process.exited"]
    assert mine[1]["pid"] > 0 and mine[2]["signal"] == "SIGTERM"
    assert mine[3]["exit_state"] == "canceled" and mine[3]["exit_signal"] == "SIGTERM"
    assert not [e for e in lines if e["event"] == "http.request"], "requests are logged at debug only"


def test_debug_level_logs_each_request_without_its_token(daemon: Any, tmp_path: Any) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "token").chmod(0o600)  # the daemon refuses a token others can read
    d = daemon("--log-level", "debug", "--token-file", str(tmp_path / "token")).start()
    request = urllib.request.Request(d.url + "/processes?limit=1",
                                     headers={"Authorization": "Bearer s3cret-token"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    assert call(d, "POST", "/processes", {"argv": ["true"]}, unix=True)[0] == 201

    def requests() -> list[dict[str, Any]]:
        return [e for e in events(d) if e["event"] == "http.request"]

    # the line is written once the response has gone out, so it may trail the reply
    wait_for(lambda: {(e["method"], e["path"], e["status"]) for e in requests()} >= {
        ("GET", "/processes", 200), ("POST", "/processes", 201)}, what="both request lines")
    assert all(e["level"] == "debug" and e["ms"] >= 0 for e in requests())
    assert "s3cret-token" not in d.log()
