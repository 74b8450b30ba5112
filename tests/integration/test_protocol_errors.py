"""aiohttp's own parse errors (before any middleware) leave in the JSON envelope, logged quietly."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.integration.rawhttp import send


@pytest.mark.parametrize("target,headers", [
    ("/?q=" + "a" * 2000, {}),                                  # request line too long
    ("/api/v1/processes?q=" + "a" * 2000, {}),
    ("/", {"X-Big": "b" * 2000}),                               # header too long
    ("/", {"Bad Header": "x"}),                                 # invalid header name
])
async def test_parse_errors_are_json_and_not_logged_as_errors(protocol_server: Any, target: str,
                                                              headers: dict[str, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await send(protocol_server, "GET", target, headers=headers)
    assert reply.status == 400
    body = reply.json()
    assert body["error"].startswith("malformed request: ")
    assert body["code"] == "bad_request"
    assert "aaaa" not in body["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_good_requests_are_untouched(protocol_server: Any) -> None:
    reply = await send(protocol_server, "GET", "/")
    assert reply.status == 200 and reply.json() == {"ok": True}
