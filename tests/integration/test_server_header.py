"""``Server:`` names Stablehand, never the Python and aiohttp versions (issue 22).

Every kind of answer is covered: a handler's JSON, the edge's errors (401, 404, 400,
429), a stream (SSE) and aiohttp's own refusals of a malformed request, which no
app hook sees (protocol_errors.JsonErrorHandler sets it there).
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon import __version__
from tests.integration.rawhttp import send

TOKEN = "server-header-token"
EXPECTED = f"Stablehand/{__version__}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _named(headers: Any) -> None:
    server = headers.get("Server", headers.get("server"))
    assert server == EXPECTED, server
    assert "aiohttp" not in server.lower() and "python" not in server.lower()


async def test_every_answer_names_stablehand(make_daemon: Any) -> None:
    client = await make_daemon(token=TOKEN, rate_limit=0.001, rate_burst=2)
    for method, path, headers, status in (
            ("GET", "/healthz", {}, 200),
            ("GET", "/openapi.json", AUTH, 200),
            ("GET", "/processes", {}, 401),
            ("GET", "/no/such/route", AUTH, 404),
            ("POST", "/processes/0/signals/kill", AUTH, 400),
            ("POST", "/processes/7/signals/kill", AUTH, 404),
            ("POST", "/processes/7/signals/kill", AUTH, 429)):
        response = await client.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert response.status == status, (path, await response.text())
        _named(response.headers)
        response.release()


async def test_a_stream_names_stablehand(make_daemon: Any) -> None:
    client = await make_daemon(token=TOKEN)
    async with client.get("/events", headers=AUTH) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        _named(response.headers)
        assert await asyncio.wait_for(response.content.readline(), 10) == b": stablehand events\n"


async def test_a_malformed_request_is_refused_in_stablehands_name(protocol_server: Any) -> None:
    reply = await send(protocol_server, "GET", "/?q=" + "a" * 2000)
    assert reply.status == 400 and reply.json()["code"] == "bad_request"
    _named(reply.headers)
