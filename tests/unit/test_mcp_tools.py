"""`stablehand mcp`'s pure parts: --allow, argument checks, UTF-8 range edges, status lines."""

from __future__ import annotations

import pytest

from daemon.mcp_actions import _utf8_bounds, poll_status, record_status
from daemon.mcp_server import bad_arguments
from daemon.mcp_tools import READ_ONLY, TOOLS, parse_allow


def test_allow_takes_known_names_and_refuses_others() -> None:
    assert parse_allow(" list_processes, read_output ,") == {"list_processes", "read_output"}
    with pytest.raises(ValueError, match="unknown tool 'rm'"):
        parse_allow("list_processes,rm")
    with pytest.raises(ValueError, match="at least one"):
        parse_allow(" , ")
    assert READ_ONLY == {"poll_process", "list_processes", "read_output", "wait_process"}


def test_every_schema_is_a_closed_object_and_checks_its_arguments() -> None:
    for spec in TOOLS.values():
        assert spec.schema["type"] == "object" and spec.schema["additionalProperties"] is False
    assert bad_arguments("start_process", {"argv": ["ls", "-l"], "tty": True}) is None
    assert bad_arguments("poll_process", {"id": "web"}) is None
    assert bad_arguments("poll_process", {}) == "invalid arguments for poll_process: 'id' is a required property"
    assert bad_arguments("start_process", {"argv": []}).startswith(
        "invalid arguments for start_process: argv: [] should be non-empty")
    assert "Additional properties" in bad_arguments("wait_process", {"id": 1, "forever": True})
    assert bad_arguments("poll_process", {"id": 1, "yield_ms": 60000}).startswith(
        "invalid arguments for poll_process: yield_ms:")


@pytest.mark.parametrize(("data", "at_start", "at_end", "expected"), [
    ("aé".encode(), True, True, (0, 3)),
    ("é".encode()[1:] + b"abc", False, True, (1, 4)),       # cut after a lead byte: skip its rest
    (b"ab" + "€".encode()[:2], True, False, (0, 2)),       # a 3-byte character cut at the end
    (b"ab" + "€".encode()[:2], True, True, (0, 4)),        # ...unless it is the stream's end
    (b"x" + "😀".encode(), True, False, (0, 5)),           # a whole 4-byte character is kept
    (b"x" + "😀".encode()[:3], True, False, (0, 1)),
    (b"\xff\xfe", False, False, (0, 2)),                   # invalid bytes are left to the decoder
    (b"", False, False, (0, 0)),
])
def test_a_byte_range_keeps_whole_characters(data: bytes, at_start: bool, at_end: bool,
                                             expected: tuple[int, int]) -> None:
    assert _utf8_bounds(data, at_start, at_end) == expected


def test_status_lines_say_how_a_process_ended() -> None:
    assert record_status({"state": "running", "pid": 42}) == "running (pid 42)"
    assert record_status({"state": "queued", "pid": None}) == "queued"
    assert record_status({"state": "idle", "exitState": "success", "exitCode": 0}) == \
        "ended: success, exit code 0"
    assert record_status({"state": "idle", "exitState": "canceled", "exitSignal": "SIGTERM",
                          "error": "lease expired"}) == "ended: canceled, killed by SIGTERM: lease expired"
    assert record_status({"state": "idle", "exitState": "failed", "error": "no such file"}) == \
        "ended: failed: no such file"
    assert poll_status({"exited": False, "state": "running"}) == "running"
    assert poll_status({"exited": True, "exitCode": 3}) == "exited with code 3"
    assert poll_status({"exited": True, "exitSignal": "SIGKILL"}) == "killed by SIGKILL"
