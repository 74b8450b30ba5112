"""A terminal outlives its daemon: the keeper holds the pty master, the WebSocket reconnects."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.helpers import DaemonProcess, alive, wait_for
from tests.integration.test_tty import _read_until
from tests.system.test_daemon import call


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    async with asyncio.timeout(15):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                return message


async def test_a_terminal_survives_kill_9_of_the_daemon(daemon: Any) -> None:
    d: DaemonProcess = daemon().start()
    status, record = call(d, "POST", "/processes", {
        "argv": ["sh", "-i"], "env": {"PS1": "$ ", "ENV": ""}, "tty": {"rows": 24, "cols": 80}})
    assert status == 201, record
    url = f"{d.url}/processes/{record['id']}/tty"
    async with aiohttp.ClientSession(headers=d.headers()) as session:
        ws = await session.ws_connect(url, params={"offset": "0"})
        await ws.send_bytes(b"echo $((6*7))\n")
        received = await _read_until(ws, b"42\r\n", 15.0)

        d.kill9()
        await _until_closed(ws)                       # the daemon is gone: the socket with it
        assert alive(record["pid"])                   # the shell is not: the keeper holds it
        d.start()
        status, again = call(d, "GET", f"/processes/{record['id']}")
        assert status == 200 and again["state"] == "running" and again["tty"] == record["tty"]

        ws = await session.ws_connect(url, params={"offset": str(len(received))})
        await ws.send_bytes(b"echo $((7*8))\n")
        await _read_until(ws, b"56\r\n", 15.0)
        status, resized = call(d, "POST", f"/processes/{record['id']}/resize", {"rows": 30, "cols": 100})
        assert status == 200 and resized["tty"] == {"rows": 30, "cols": 100}
        await ws.send_bytes(b"stty size\n")
        await _read_until(ws, b"30 100\r\n", 15.0)
        await ws.send_bytes(b"exit 0\n")
        closed = await _until_closed(ws)
        assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "exit:0")
        await ws.close()
    wait_for(lambda: call(d, "GET", f"/processes/{record['id']}")[1]["state"] == "idle", 15,
             "the shell's record idle")
    assert call(d, "GET", f"/processes/{record['id']}")[1]["exitCode"] == 0
