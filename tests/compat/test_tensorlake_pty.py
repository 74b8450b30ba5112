"""Tensorlake's PTY API, spoken as its SDK speaks it (tensorlake/sandbox/pty.py): create, the
WebSocket's opcodes (0x00 data, 0x01 resize >HH cols rows, 0x02 ready, 0x03 >i exit), the
``exit:N`` close, reconnecting to a running session, and kill.

The SDK itself is not a test dependency; these frames are byte for byte what it sends and
reads (``send_input``, ``resize``, ``connect``'s ready, ``_reader_loop``).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiohttp
import psutil

from tests.compat.conftest import record_of, wait_idle

ENV = {"PS1": "$ ", "ENV": ""}


async def create(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/pty", json=body)
    assert response.status == 201, await response.text()
    session = await response.json()
    assert set(session) == {"session_id", "token"}
    return session


async def connect(client: Any, session: dict[str, Any], by_query: bool = False) -> Any:
    url = f"/api/v1/pty/{session['session_id']}/ws"
    if by_query:
        ws = await client.ws_connect(url, params={"token": session["token"]})
    else:
        ws = await client.ws_connect(url, headers={"X-PTY-Token": session["token"]})
    await ws.send_bytes(b"\x02")   # ready, as Pty.connect() sends it
    return ws


async def read_until(ws: Any, text: bytes) -> bytes:
    data = b""
    async with asyncio.timeout(10):
        while text not in data:
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.BINARY, (message, data)
            assert message.data[0] == 0x00, message.data
            data += message.data[1:]
    return data


async def test_a_session_types_resizes_reconnects_and_exits(client: Any) -> None:
    session = await create(client, command="sh", args=["-i"], env=ENV, rows=24, cols=80)
    ws = await connect(client, session)
    await ws.send_bytes(b"\x00" + b"echo $((6*7))\n")         # send_input
    await read_until(ws, b"42\r\n")
    await ws.send_bytes(struct.pack(">BHH", 0x01, 100, 30))   # resize(cols=100, rows=30)
    await ws.send_bytes(b"\x00stty size\n")
    await read_until(ws, b"30 100\r\n")
    record = await record_of(client, int(session["session_id"]))
    assert record["tty"] == {"rows": 30, "cols": 100} and "tty_token" not in record
    await ws.close()                                          # disconnect

    ws = await connect(client, session, by_query=True)        # connect_pty to the running session
    assert b"42\r\n" in await read_until(ws, b"30 100\r\n")   # its recent screen first
    await ws.send_bytes(b"\x00exit 5\n")
    async with asyncio.timeout(10):
        while (message := await ws.receive()).data[0] != 0x03:
            assert message.type is aiohttp.WSMsgType.BINARY
    assert struct.unpack(">i", message.data[1:5])[0] == 5    # the exit frame
    message = await ws.receive(timeout=10)
    assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "exit:5")
    await ws.close()
    assert (await wait_idle(client, int(session["session_id"])))["exitCode"] == 5


async def test_tokens_sessions_and_fields_are_checked(client: Any) -> None:
    session = await create(client, command="sleep", args=["100"])
    url = f"/api/v1/pty/{session['session_id']}/ws"
    for headers in ({}, {"X-PTY-Token": "wrong"}, {"X-PTY-Token": session["token"] + "x"}):
        response = await client.get(url, headers=headers)
        assert response.status == 401, headers
        assert (await response.json())["code"] == "invalid_token"
    response = await client.get(url, headers={"X-PTY-Token": session["token"]})
    assert response.status == 426                              # the right token, but no upgrade
    plain = await client.post("/processes", json={"argv": ["sleep", "100"], "tty": {"rows": 5, "cols": 5}})
    plain_id = (await plain.json())["id"]
    for other in (str(plain_id), "999999", "abc", "9" * 40):   # a native terminal is no session
        response = await client.get(f"/api/v1/pty/{other}/ws", headers={"X-PTY-Token": "x"})
        assert response.status == 404 and (await response.json())["code"] == "not_found"
        assert (await client.delete(f"/api/v1/pty/{other}")).status == 404
    for body in ({"command": "sh", "rows": 0}, {"command": "sh", "cols": 1001},
                 {"command": "sh", "rows": "24"}, {"args": ["x"]}, {"command": "sh", "bogus": 1}):
        response = await client.post("/api/v1/pty", json=body)
        assert response.status == 400, body
        assert (await response.json())["code"] == "invalid_request"
    response = await client.post("/api/v1/pty", json={"command": "/no/such/program"})
    assert response.status == 400 and (await response.json())["code"] == "spawn_failed"

    pid = (await record_of(client, int(session["session_id"])))["pid"]
    response = await client.delete(f"/api/v1/pty/{session['session_id']}")   # Pty.kill()
    assert response.status == 204
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    record = await wait_idle(client, int(session["session_id"]))
    assert record["exitSignal"] == "SIGKILL"
    assert (await client.delete(f"/api/v1/pty/{session['session_id']}")).status == 204
    await client.post(f"/processes/{plain_id}/signals/kill", json={})
    await wait_idle(client, plain_id)
