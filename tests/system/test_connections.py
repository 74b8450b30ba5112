"""Connections on the real daemon: idle floods, slow headers, idle keep-alive, clients that leave.

Issue 15: 20,000 idle TCP connections made the Unix socket and authenticated
clients unreachable; a client that never finished its headers was never
dropped; a client leaving mid-stream was logged as an error with a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from typing import Any

import pytest

from tests.helpers import DaemonProcess, wait_for
from tests.system.test_daemon import _unix_call, call


def _connect(d: DaemonProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", d.port), timeout=10)


def _get(d: DaemonProcess, target: str, keep_alive: bool = False) -> socket.socket:
    """A raw TCP GET (the daemon runs with --token-file none, so no token is needed)."""
    sock = _connect(d)
    connection = "keep-alive" if keep_alive else "close"
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 15.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"{marker!r} not received; got {data[-300:]!r}"
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before {marker!r}; got {data[-300:]!r}"
            data += chunk
    return data


def _read_to_close(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until the daemon closes the connection, and when that happened."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the daemon did not close the connection within {timeout}s"
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return data, time.monotonic()
            data += chunk


def _open_sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
               if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_idle_tcp_flood_leaves_the_socket_and_real_clients_answered(daemon: Any, loop: str) -> None:
    d = daemon("--token-file", "none", "--event-loop", loop,
               env={"STABLEHAND_MAX_CONNECTIONS": "50", "STABLEHAND_HEADER_TIMEOUT": "120"}).start()
    assert d.proc is not None
    baseline = _open_sockets(d.proc.pid)
    with contextlib.ExitStack() as open_sockets:
        flood = [open_sockets.enter_context(_connect(d)) for _ in range(200)]
        # Each connection past the 50th takes the place of the longest-idle one, which is
        # closed: the 150 oldest are gone, the daemon holds 50 sockets, not 200.
        closed: set[socket.socket] = set()

        def oldest_closed() -> bool:
            for sock in select.select([s for s in flood if s not in closed], [], [], 0.05)[0]:
                assert _read_to_close(sock, 10)[0] == b""   # it had sent nothing: no answer
                closed.add(sock)
            return len(closed) >= 150
        wait_for(oldest_closed, 20, "the longest-idle connections to be closed")
        assert closed == set(flood[:150])
        assert _open_sockets(d.proc.pid) - baseline <= 50 + 5

        # The Unix socket has its own budget: it answers, for reads and for starts.
        assert _unix_call(d.socket_path, "GET", "/healthz", None)[0] == 200
        status, created = _unix_call(d.socket_path, "POST", "/processes",
                                     json.dumps({"argv": ["true"]}).encode())
        assert status == 201, created
        # A real TCP client still gets in: it too takes an idle connection's place.
        assert call(d, "GET", "/processes")[0] == 200

        # Only when every place is busy (50 open event streams) is a new connection refused.
        for _ in range(50):
            stream = open_sockets.enter_context(_get(d, "/events"))
            _read_until(stream, b": stablehand events")
        extra = open_sockets.enter_context(_connect(d))
        refusal, _ = _read_to_close(extra, 10)
        assert refusal.startswith(b"HTTP/1.1 503 ")
        body = json.loads(refusal.partition(b"\r\n\r\n")[2])
        assert body["code"] == "unavailable" and "too many connections" in body["error"]
        assert _unix_call(d.socket_path, "GET", "/processes", None)[0] == 200
    # The streams closed, TCP serves again.
    wait_for(lambda: call(d, "GET", "/processes")[0] == 200, 10, "TCP to serve again")
    assert "http.connections_full" in d.log()


def test_slow_headers_are_cut_but_streams_and_follows_are_not(daemon: Any) -> None:
    d = daemon("--token-file", "none",
               env={"STABLEHAND_HEADER_TIMEOUT": "1", "STABLEHAND_KEEPALIVE_TIMEOUT": "2"}).start()
    late = call(d, "POST", "/processes",
                {"argv": ["python3", "-c", "import time; time.sleep(4); print('late', flush=True)"]})[1]
    with contextlib.ExitStack() as open_sockets:
        events = open_sockets.enter_context(_get(d, "/events"))
        _read_until(events, b": stablehand events")
        follow = open_sockets.enter_context(_get(d, f"/processes/{late['id']}/output?follow=1"))
        _read_until(follow, b"\r\n\r\n")
        opened = time.monotonic()

        # Slowloris: a request line, then header bytes trickled one at a time, never finished.
        slow = open_sockets.enter_context(_connect(d))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        while not select.select([slow], [], [], 0.1)[0]:
            assert time.monotonic() - started < 20, "a client trickling its headers was never dropped"
            slow.send(b"a")
        answer, closed_at = _read_to_close(slow, 5)
        assert closed_at - started >= 0.9   # not before header_timeout (1 s)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "timeout"

        # A connection that never sends a byte is cut at the header deadline too.
        silent = open_sockets.enter_context(_connect(d))
        silent_from = time.monotonic()
        assert _read_to_close(silent, 10)[1] - silent_from >= 0.9

        # An idle keep-alive connection is closed after keepalive_timeout (2 s), not before.
        idle = open_sockets.enter_context(_get(d, "/healthz", keep_alive=True))
        _read_until(idle, b'"ok"')
        idle_from = time.monotonic()
        _, idle_closed = _read_to_close(idle, 15)
        assert idle_closed - idle_from >= 1.9

        # The streams opened before all that outlived both timeouts and still deliver.
        assert call(d, "POST", "/processes", {"argv": ["true"]})[0] == 201
        _read_until(events, b"event: state")
        data, _ = _read_to_close(follow, 20)
        assert b"late" in data
        assert time.monotonic() - opened > 3.0


def test_a_client_leaving_mid_stream_is_a_debug_event(daemon: Any) -> None:
    d = daemon("--token-file", "none", "--log-level", "debug").start()
    printer = call(d, "POST", "/processes", {"argv": [
        "python3", "-c", "import time\nwhile True:\n print('x' * 200, flush=True)\n time.sleep(0.01)"]})[1]
    targets = ["/events", f"/processes/{printer['id']}/output?follow=1",
               f"/api/v1/processes/{printer['pid']}/stdout/follow",
               f"/processes/{printer['id']}/output"]
    for target in targets:
        sock = _get(d, target)
        _read_until(sock, b"\r\n\r\n")
        sock.close()
    # A state change makes /events write to its gone client.
    assert call(d, "POST", "/processes", {"argv": ["true"]})[0] == 201
    paths = {"/events", f"/processes/{printer['id']}/output",
             f"/api/v1/processes/{printer['pid']}/stdout/follow"}

    def all_gone_logged() -> bool:
        return paths <= {_client_gone_path(line) for line in d.log().splitlines()}
    wait_for(all_gone_logged, 15, f"http.client_gone at debug for each of {paths}")
    assert call(d, "POST", f"/processes/{printer['id']}/signals/kill", {})[0] == 200
    log = d.log()
    assert "Traceback" not in log and "Error handling request" not in log
    assert "http.unhandled" not in log
    levels = {json.loads(line).get("level") for line in log.splitlines() if line.startswith("{")}
    assert "error" not in levels and "critical" not in levels


def _client_gone_path(line: str) -> str | None:
    """The path of an ``http.client_gone`` debug event, if the log line is one."""
    if "http.client_gone" not in line:
        return None
    event = json.loads(line)
    return str(event["path"]) if event["level"] == "debug" else None
