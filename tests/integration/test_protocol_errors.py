"""aiohttp's own parse errors (before any middleware) leave in the JSON envelope, logged quietly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from daemon.http.protocol_errors import JsonErrorServer
from tests.integration.rawhttp import send


class _Served:
    def __init__(self, port: int) -> None:
        self.server = self
        self.host, self.port = "127.0.0.1", port


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    async def ok(request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"ok": True})

    runner = web.ServerRunner(JsonErrorServer(ok, max_line_size=1024, max_field_size=1024))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield _Served(runner.addresses[0][1])
    await runner.cleanup()


@pytest.mark.parametrize("target,headers", [
    ("/?q=" + "a" * 2000, {}),                                  # request line too long
    ("/api/v1/processes?q=" + "a" * 2000, {}),
    ("/", {"X-Big": "b" * 2000}),                               # header too long
    ("/", {"Bad Header": "x"}),                                 # invalid header name
])
async def test_parse_errors_are_json_and_not_logged_as_errors(served: Any, target: str,
                                                              headers: dict[str, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await send(served, "GET", target, headers=headers)
    assert reply.status == 400
    body = reply.json()
    assert body["error"].startswith("malformed request: ")
    assert body["code"] == "bad_request"
    assert "aaaa" not in body["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_good_requests_are_untouched(served: Any) -> None:
    reply = await send(served, "GET", "/")
    assert reply.status == 200 and reply.json() == {"ok": True}
