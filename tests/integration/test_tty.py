"""Terminals through the native API: a shell on a pty, keystrokes, resize, ^C, the WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psutil

from tests.conformance.contracts import assert_process_record
from tests.helpers import async_wait_for
from tests.integration.test_processes import get, start, wait_idle

SHELL = {"argv": ["sh", "-i"], "env": {"PS1": "$ ", "ENV": ""}, "tty": {"rows": 24, "cols": 80}}


async def output(client: Any, process_id: int, offset: int = 0) -> bytes:
    response = await client.get(f"/processes/{process_id}/output", params={"offset": str(offset)})
    assert response.status == 200
    return await response.read()


async def appears(client: Any, process_id: int, text: bytes, offset: int = 0) -> None:
    async def seen() -> bool:
        return text in await output(client, process_id, offset)
    await async_wait_for(seen, what=f"{text!r} on the terminal")


async def type_keys(client: Any, process_id: int, keys: bytes) -> None:
    response = await client.post(f"/processes/{process_id}/stdin", data=keys,
                                 headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, await response.text()
    assert (await response.json())["written"] == len(keys)


def sleepers(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"]
    except psutil.Error:
        return []


async def test_a_shell_answers_resizes_and_survives_ctrl_c(client: Any) -> None:
    record = await start(client, **SHELL)
    assert record["tty"] == {"rows": 24, "cols": 80} and record["stdin"] == "pipe"
    process_id = record["id"]

    await type_keys(client, process_id, b"echo $((6*7))\n")
    await appears(client, process_id, b"42\r\n")

    await type_keys(client, process_id, b"stty size\n")
    await appears(client, process_id, b"24 80\r\n")
    response = await client.post(f"/processes/{process_id}/resize", json={"rows": 50, "cols": 132})
    assert response.status == 200, await response.text()
    resized = await response.json()
    assert resized["tty"] == {"rows": 50, "cols": 132}
    for shown in (record, resized):
        assert_process_record(shown)   # Cyrnel's Process schema and ours, with the tty field
    assert (await get(client, process_id))["tty"] == {"rows": 50, "cols": 132}
    await type_keys(client, process_id, b"stty size\n")
    await appears(client, process_id, b"50 132\r\n")

    await type_keys(client, process_id, b"sleep 100\n")
    await async_wait_for(_async(lambda: sleepers(record["pid"])), what="sleep to run")
    (sleeper,) = sleepers(record["pid"])
    mark = len(await output(client, process_id))
    await type_keys(client, process_id, b"\x03")
    await async_wait_for(_async(lambda: not sleeper.is_running()), what="^C to interrupt sleep")
    await appears(client, process_id, b"$ ", offset=mark)      # the prompt, again
    assert (await get(client, process_id))["state"] == "running"
    await type_keys(client, process_id, b"echo back-$((2+3))\n")
    await appears(client, process_id, b"back-5\r\n", offset=mark)

    await type_keys(client, process_id, b"exit 3\n")
    done = await wait_idle(client, process_id)
    assert done["exitCode"] == 3 and done["tty"] == {"rows": 50, "cols": 132}
    response = await client.post(f"/processes/{process_id}/resize", json={"rows": 5, "cols": 5})
    assert response.status == 409


async def test_two_websocket_viewers_see_the_output_and_one_types(client: Any) -> None:
    record = await start(client, **SHELL)
    process_id = record["id"]
    await appears(client, process_id, b"$ ")
    first = await client.ws_connect(f"/processes/{process_id}/tty")
    second = await client.ws_connect(f"/processes/{process_id}/tty")
    await first.send_bytes(b"echo $((6*7))\n")
    seen = [await _read_until(ws, b"42\r\n") for ws in (first, second)]
    assert all(b"echo $((6*7))" in data for data in seen)   # the echo of the keys, then the answer
    await second.send_bytes(b"exit 7\n")
    for ws in (first, second):
        close = await _next_close(ws)
        assert (close.data, close.extra) == (1000, "exit:7")
        await ws.close()
    assert (await wait_idle(client, process_id))["exitCode"] == 7


async def test_the_websocket_closes_with_the_exit_and_replays_from_an_offset(client: Any) -> None:
    record = await start(client, argv=["sh", "-c", "echo hello; exit 4"], tty={"rows": 5, "cols": 20})
    process_id = record["id"]
    await wait_idle(client, process_id)
    ws = await client.ws_connect(f"/processes/{process_id}/tty", params={"offset": "0"})
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.BINARY and message.data == b"hello\r\n"
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert (message.data, message.extra) == (1000, "exit:4")
    await ws.close()
    ws = await client.ws_connect(f"/processes/{process_id}/tty")   # from the end: nothing, then the end
    message = await ws.receive(timeout=10)
    assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "exit:4")
    await ws.close()


async def test_the_websocket_refuses_text_frames(client: Any) -> None:
    record = await start(client, **SHELL)
    ws = await client.ws_connect(f"/processes/{record['id']}/tty")
    await ws.send_str("echo hi\n")
    message = await _next_close(ws)
    assert (message.data, message.extra) == (1003, "binary frames only")
    await ws.close()
    await client.post(f"/processes/{record['id']}/signals/kill", json={})
    await wait_idle(client, record["id"])


async def test_terminal_requests_are_checked(client: Any) -> None:
    for tty in ({"rows": 24}, {"rows": 0, "cols": 80}, {"rows": 24, "cols": 1001},
                {"rows": 24, "cols": 80, "x": 1}, [24, 80], {"rows": 2.5, "cols": 80},
                {"rows": True, "cols": 80}):
        response = await client.post("/processes", json={"argv": ["true"], "tty": tty})
        assert response.status == 400, tty
        assert "tty" in (await response.json())["error"]
    plain = await start(client, argv=["sleep", "30"], stdin="pipe")
    response = await client.post(f"/processes/{plain['id']}/resize", json={"rows": 5, "cols": 5})
    assert response.status == 409 and "no terminal" in (await response.json())["error"]
    response = await client.get(f"/processes/{plain['id']}/tty")
    assert response.status == 409
    term = await start(client, **SHELL)
    response = await client.get(f"/processes/{term['id']}/tty")
    assert response.status == 426 and "WebSocket" in (await response.json())["error"]
    for body in ({"rows": 5}, {"rows": 5, "cols": 0}, [5, 5]):
        response = await client.post(f"/processes/{term['id']}/resize", json=body)
        assert response.status == 400, body
    response = await client.post("/processes/999999/resize", json={"rows": 5, "cols": 5})
    assert response.status == 404
    for record in (plain, term):
        await client.post(f"/processes/{record['id']}/signals/kill", json={})
        await wait_idle(client, record["id"])


async def _read_until(ws: Any, text: bytes, timeout: float = 10.0) -> bytes:
    """Binary frames until ``text`` is among them."""
    data = b""
    async with asyncio.timeout(timeout):
        while text not in data:
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.BINARY, (message, data)
            data += message.data
    return data


async def _next_close(ws: Any) -> Any:
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return message


def _async(predicate: Any) -> Any:
    async def check() -> Any:
        return predicate()
    return check


async def test_web_pages_cannot_open_a_terminal_but_the_daemons_own_origin_can(client: Any) -> None:
    """Cross-site WebSocket hijacking: a page's Origin is refused before the upgrade. The
    daemon's own origin (what websocket-client sends by default) is no page's."""
    record = await start(client, **SHELL)
    url = f"/processes/{record['id']}/tty"
    for origin in ("http://evil.example", "http://localhost:1", "null"):
        response = await client.get(url, headers={"Origin": origin, "Connection": "Upgrade",
                                                  "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert response.status == 403, origin
    own = f"http://127.0.0.1:{client.port}"
    ws = await client.ws_connect(url, origin=own)
    await ws.send_bytes(b"echo $((6*7))\n")
    await _read_until(ws, b"42\r\n")
    await ws.close()
    await client.post(f"/processes/{record['id']}/signals/kill", json={})
    await wait_idle(client, record["id"])
