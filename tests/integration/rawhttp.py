"""One HTTP/1.1 request written byte for byte, as a browser or an attacker would send it.

aiohttp's client adds a Content-Type to any body and refuses bytes that are
not valid in a header; these tests need exactly the bytes they describe.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]   # names lower-cased
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


async def send(client: Any, method: str, target: str | bytes, *, headers: Mapping[str, str | bytes] | None = None,
               body: bytes | None = None, host: str | bytes | None = None,
               unix: str | None = None, version: str = "HTTP/1.1") -> Reply:
    """Send one request to the test client's server (or a Unix socket) and read the whole reply.

    ``host`` None sends ``Host: 127.0.0.1:<port>``; b"" sends no Host at all.
    A body gets a Content-Length and no Content-Type unless ``headers`` has one.
    """
    if unix is not None:
        reader, writer = await asyncio.open_unix_connection(unix)
    else:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    if host is None:
        host = f"127.0.0.1:{client.server.port}"
    target_bytes = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target_bytes + b" " + version.encode()]
    if host:
        lines.append(b"Host: " + (host.encode() if isinstance(host, str) else host))
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), parsed, payload)
