"""Whoever reaches the keeper's socket: another uid, garbage, floods. None of it hurts it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from daemon.keeper.client import KeeperClient
from tests.helpers import wait_for
from tests.keeper.conftest import raw_address

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def raw(state_dir: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(raw_address(state_dir))
    return sock


def hear(sock: socket.socket) -> dict[str, Any] | None:
    """The next line from the keeper as JSON, or None when it closed the connection."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:   # closed with our request unread
            return None
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def hello(state_dir: Path, version: Any = 1) -> bytes:
    return json.dumps({"op": "hello", "version": version, "state_dir": str(state_dir)}).encode() + b"\n"


async def still_serves(keeper: Any) -> None:
    client = await KeeperClient.connect(str(keeper.state_dir))
    try:
        await client.spawn(1000 + os.getpid() % 1000, ["true"], ENV)
        assert keeper.proc.poll() is None
    finally:
        await client.close()


async def test_garbage_before_hello_closes_that_connection_only(start_keeper: Any) -> None:
    keeper = start_keeper()
    for junk in (b"garbage\n", b"[1, 2, 3]\n", b'{"op": "list", "seq": 1}\n', b"\x00\xff\xfe\n",
                 b'{"op": "hello", "version": "1"}\n', b"{" * 100000 + b"\n"):
        with raw(keeper.state_dir) as sock:
            sock.sendall(junk)
            reply = hear(sock)
            assert reply is not None and reply["ok"] is False, junk[:20]
            assert hear(sock) is None   # and closed
    with raw(keeper.state_dir) as sock:
        sock.sendall(hello(keeper.state_dir, version=2))
        reply = hear(sock)
        assert reply is not None and "speaks protocol version 1, not 2" in reply["error"]
        assert hear(sock) is None
    await still_serves(keeper)


async def test_garbage_after_hello_gets_error_replies(start_keeper: Any) -> None:
    keeper = start_keeper()
    with raw(keeper.state_dir) as sock:
        sock.sendall(hello(keeper.state_dir))
        assert hear(sock)["ok"] is True   # type: ignore[index]
        for junk, expected in ((b"not json", "invalid JSON"), (b"[" * 100000, "invalid JSON"),
                               (b'"a string"', "JSON object"), (b'{"op": 7, "seq": 1}', "unknown op"),
                               (b'{"op": "reboot", "seq": 2}', "unknown op"),
                               (b'{"op": "spawn", "seq": 3, "id": 1, "argv": "sh", "env": {}}', "argv"),
                               (b'{"op": "spawn", "seq": 4, "id": 1, "argv": ["a\\u0000b"], "env": {}}', "NUL"),
                               (b'{"op": "spawn", "seq": 5, "id": true, "argv": ["true"], "env": {}}', "id"),
                               (b'{"op": "spawn", "seq": 6, "id": 1, "argv": ["true"], "env": {"A=B": "c"}}', "env"),
                               (b'{"op": "signal", "seq": 7, "id": 1, "sig": 999}', "not a signal"),
                               (b'{"op": "stdin_write", "seq": 8, "id": 1, "data": "!!"}', "no live child"),
                               (b'{"op": "ack", "seq": 9, "ids": "all"}', "ids")):
            sock.sendall(junk + b"\n")
            reply = hear(sock)
            assert reply is not None and reply["ok"] is False and expected in reply["error"], (junk[:40], reply)
        sock.sendall(b'{"op": "list", "seq": 10}\n')
        assert hear(sock)["ok"] is True   # type: ignore[index]
    await still_serves(keeper)


async def test_an_oversized_line_is_refused_and_the_connection_closed(start_keeper: Any) -> None:
    keeper = start_keeper()
    with raw(keeper.state_dir) as sock:
        sock.sendall(hello(keeper.state_dir))
        hear(sock)
        try:
            sock.sendall(b'{"op": "list", "pad": "' + b"x" * (5 * 1024 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass   # closed while we were still sending: that is the refusal
        else:
            reply = hear(sock)
            assert reply is not None and "longer than" in reply["error"]
            assert hear(sock) is None
    await still_serves(keeper)


async def test_connections_that_never_say_hello_are_bounded(start_keeper: Any) -> None:
    keeper = start_keeper()
    fds = len(os.listdir(f"/proc/{keeper.pid}/fd"))
    silent = [raw(keeper.state_dir) for _ in range(16)]
    try:
        extra = raw(keeper.state_dir)
        extra.sendall(hello(keeper.state_dir))
        assert hear(extra) is None   # the 17th waiting connection is closed at once
        extra.close()
    finally:
        for sock in silent:
            sock.close()
    wait_for(lambda: len(os.listdir(f"/proc/{keeper.pid}/fd")) <= fds, what="the keeper to drop them")
    await still_serves(keeper)


# The venv's interpreter may sit under /root (0700): the other user runs a system one.
OTHER_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)),
                    sys.executable)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_a_client_with_another_uid_is_refused(start_keeper: Any) -> None:
    base = Path(tempfile.mkdtemp(prefix="kpuid", dir="/tmp"))
    try:
        state_dir = base / "state"
        keeper = start_keeper(state_dir)
        sock_path = state_dir / "keeper.sock"
        assert sock_path.stat().st_mode & 0o777 == 0o600
        probe = ("import socket, sys\n"
                 "s = socket.socket(socket.AF_UNIX)\n"
                 "try:\n    s.connect(sys.argv[1])\n"
                 "except PermissionError:\n    print('EACCES'); sys.exit()\n"
                 "try:\n"
                 "    s.sendall(b'{\"op\":\"hello\",\"version\":1,\"state_dir\":\"' + sys.argv[2].encode() + b'\"}\\n')\n"
                 "    s.settimeout(10)\n"
                 "    print('closed' if s.recv(100) == b'' else 'answered')\n"
                 "except (BrokenPipeError, ConnectionResetError):\n"
                 "    print('closed')\n")

        def as_nobody() -> str:
            done = subprocess.run([OTHER_PYTHON, "-c", probe, str(sock_path), str(state_dir)],
                                  user=65534, group=65534, capture_output=True, timeout=30,
                                  text=True, cwd="/", check=False)
            return done.stdout.strip() or done.stderr
        assert as_nobody() == "EACCES"   # the socket is 0600: nobody cannot even connect
        # Open the path up, as a careless operator might: the uid check still refuses.
        os.chmod(base, 0o755)
        os.chmod(state_dir, 0o755)
        os.chmod(sock_path, 0o666)
        assert as_nobody() == "closed"
        assert "keeper.peer_refused" in keeper.log() and '"uid": 65534' in keeper.log()
        await still_serves(keeper)
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)


async def test_a_long_state_dir_path_works(start_keeper: Any, tmp_path: Path) -> None:
    state_dir = tmp_path / ("x" * 60) / ("y" * 60) / "state"
    assert len(str(state_dir / "keeper.sock")) > 108
    keeper = start_keeper(state_dir)
    await still_serves(keeper)
