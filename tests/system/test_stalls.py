"""Clients that stop reading, and failures after a response has started (issues F2, F3).

F2: a client without a token pipelined thousands of ``GET /healthz`` on each
connection and never read the answers: every connection looked busy, so real
clients got 503 "too many connections" forever. F3: an exception after a
streamed response had started made the edge write a second response (a 500)
into the first one's body.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from typing import Any

from tests.helpers import DaemonProcess, wait_for
from tests.system.test_connections import _open_sockets, _read_to_close
from tests.system.test_daemon import call

PIPELINED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20000


def _non_reader(d: DaemonProcess) -> socket.socket:
    """A connection that pipelines many requests (as much as the daemon takes) and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", d.port))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.send(PIPELINED)
    return sock


def test_non_readers_filling_the_budget_do_not_lock_real_clients_out(daemon: Any) -> None:
    d = daemon("--token-file", "none", "--log-level", "debug",
               env={"STABLEHAND_MAX_CONNECTIONS": "8", "STABLEHAND_KEEPALIVE_TIMEOUT": "300"}).start()
    assert d.proc is not None
    with contextlib.ExitStack() as open_sockets:
        for _ in range(8):
            open_sockets.enter_context(_non_reader(d))
        # Every place is held by a connection whose writes the daemon cannot flush.
        wait_for(lambda: d.log().count("http.write_paused") >= 8, 30, "8 stalled connections")
        # A real client is served at once: it takes the longest-stalled connection's place.
        status, body = call(d, "GET", "/processes")
        assert status == 200, body
        assert '"stalled":true' in d.log()   # http.connection_evicted of a stalled one
        assert call(d, "GET", "/healthz")[0] == 200


def test_a_stall_past_keepalive_timeout_is_cut_without_pressure(daemon: Any) -> None:
    d = daemon("--token-file", "none", "--log-level", "debug",
               env={"STABLEHAND_KEEPALIVE_TIMEOUT": "2"}).start()
    assert d.proc is not None
    baseline = _open_sockets(d.proc.pid)
    with contextlib.ExitStack() as open_sockets:
        open_sockets.enter_context(_non_reader(d))
        wait_for(lambda: "http.write_paused" in d.log(), 30, "the connection to stall")
        stalled_at = time.monotonic()
        wait_for(lambda: "http.write_stalled" in d.log(), 20, "the stalled connection to be cut")
        assert time.monotonic() - stalled_at >= 1.0   # not cut at once
        wait_for(lambda: _open_sockets(d.proc.pid) <= baseline, 10, "the daemon to drop its socket")
        assert call(d, "GET", "/healthz")[0] == 200


def test_a_failure_after_the_response_started_closes_it_without_a_second_response(
        daemon: Any) -> None:
    d = daemon("--token-file", "none").start()
    status, record = call(d, "POST", "/processes",
                          {"argv": ["python3", "-c", "print('x' * 100)"]})
    assert status == 201, record
    wait_for(lambda: call(d, "GET", f"/processes/{record['id']}")[1]["state"] != "running", 15,
             "the process to finish")
    path = d.state_dir / "output" / f"{record['id']}.stdout"
    path.unlink()
    path.mkdir()   # os.stat gives a size, reading it raises IsADirectoryError
    try:
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        with sock:
            sock.sendall(f"GET /processes/{record['id']}/output HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Connection: keep-alive\r\n\r\n".encode())
            data, _ = _read_to_close(sock, 15)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), data[:300]
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        assert len(body) < length                  # truncated, the connection closed
        assert b"HTTP/1.1" not in body and b"internal error" not in body
        wait_for(lambda: "http.failed_mid_response" in d.log(), 10, "the warning")
        event = next(json.loads(line) for line in d.log().splitlines()
                     if "http.failed_mid_response" in line)
        assert event["level"] == "warning" and "IsADirectoryError" in event["error"]
        assert call(d, "GET", "/healthz")[0] == 200
    finally:
        shutil.rmtree(path)
