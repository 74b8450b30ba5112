"""The connection guard in-process, on a real listener made by ``Connections``: what the header
deadline cuts (slow headers, also on a kept-alive connection) and what it must never cut (a
handler that takes long, a request body, a stream)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.http.connections import Connections, Limits
from daemon.lifecycle import make_daemon_app
from tests.conftest import make_config

HEADER_TIMEOUT = 0.5


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Any]:
    """The app on 127.0.0.1 behind a LimitedTCPSite: (host, port, connections)."""
    config = make_config(tmp_path / "state")
    runner = web.AppRunner(make_daemon_app(config))
    await runner.setup()
    connections = Connections(Limits(max_connections=4, socket_max_connections=4,
                                     header_timeout=HEADER_TIMEOUT, keepalive_timeout=30.0))
    site = connections.tcp_site(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "127.0.0.1", site.port, connections
    finally:
        await runner.cleanup()


async def _request(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, head: str,
                   body: bytes = b"") -> bytes:
    writer.write(head.encode() + body)
    await writer.drain()
    return await _response(reader)


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await asyncio.wait_for(reader.readexactly(length), 30)


async def _closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    data = await asyncio.wait_for(reader.read(), 30)
    return data, time.monotonic()


async def test_slow_headers_on_a_kept_alive_connection_are_cut(server: Any) -> None:
    host, port, connections = server
    reader, writer = await asyncio.open_connection(host, port)
    try:
        first = await _request(writer, reader, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 ")
        # Idle between requests is the keep-alive timer's business, not the header deadline's.
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        assert not reader.at_eof()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: loc")
        began = time.monotonic()
        data, closed_at = await _closed(reader)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert closed_at - began >= HEADER_TIMEOUT * 0.9
    finally:
        writer.close()
    await asyncio.wait_for(_until(lambda: connections.tcp.open == 0), 10)


async def test_a_handler_that_takes_long_and_a_slow_body_are_not_cut(server: Any) -> None:
    host, port, _ = server
    reader, writer = await asyncio.open_connection(host, port)
    try:
        body = b'{"command": "sleep 1"}'
        head = (f"POST /processes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode())
        await asyncio.sleep(HEADER_TIMEOUT * 2)   # the body is not under the header deadline
        created = await _request(writer, reader, "", body)
        assert created.startswith(b"HTTP/1.1 201 "), created
        record_id = created.split(b'"id":')[1].split(b",")[0].decode()
        waited = await _request(writer, reader, f"GET /processes/{record_id}/wait?timeout=10 HTTP/1.1\r\n"
                                                "Host: localhost\r\n\r\n")
        assert waited.startswith(b"HTTP/1.1 200 ") and b'"exitCode":0' in waited
    finally:
        writer.close()


async def test_a_full_budget_closes_the_longest_idle_and_refuses_only_when_all_are_busy(
        server: Any) -> None:
    host, port, connections = server
    idle = [await asyncio.open_connection(host, port) for _ in range(4)]
    await _until(lambda: connections.tcp.open == 4)
    # A fifth connection takes the place of the longest-idle one, and is served.
    reader, writer = await asyncio.open_connection(host, port)
    try:
        ok = await _request(writer, reader, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert (await _closed(idle[0][0]))[0] == b""
    # Four streams keep every place busy: now a new connection is answered 503 and closed.
    streams = []
    for _ in range(4):
        stream_reader, stream_writer = await asyncio.open_connection(host, port)
        stream_writer.write(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await asyncio.wait_for(stream_reader.readuntil(b": stablehand events"), 30)
        streams.append(stream_writer)
    reader, writer = await asyncio.open_connection(host, port)
    data, _ = await _closed(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in data
    for _, idle_writer in idle:
        idle_writer.close()
    for stream_writer in streams:
        stream_writer.close()
    await _until(lambda: connections.tcp.open == 0)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
