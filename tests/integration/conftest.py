"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from daemon.http.protocol_errors import JsonErrorServer


class _Served:
    """What tests.integration.rawhttp.send needs of a server: ``.server.host`` and ``.port``."""

    def __init__(self, port: int) -> None:
        self.server = self
        self.host, self.port = "127.0.0.1", port


@pytest.fixture
async def protocol_server() -> AsyncIterator[Any]:
    """A bare JsonErrorServer (small line and field limits) answering ``{"ok": true}``: aiohttp's
    own parse errors, which no middleware sees, are answered here."""
    async def ok(request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"ok": True})

    runner = web.ServerRunner(JsonErrorServer(ok, max_line_size=1024, max_field_size=1024))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield _Served(runner.addresses[0][1])
    await runner.cleanup()
