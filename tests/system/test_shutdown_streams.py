"""Open streams end by themselves, and properly, when the daemon stops (issue 18).

Before, a follow, an SSE stream, a run or a long poll held a stopping daemon for
aiohttp's shutdown_timeout (twice: ~4 s) and was then cut off. Now each ends as
soon as the shutdown begins (daemon/http/streaming.py): a followed byte stream
with its final chunk, SSE with ``event: shutdown``, a long poll with 503 — except
an answer about a process the shutdown itself stops (``shutdown = "stop"``),
which ends with that process, as before.

The proof is in the order of things, not in timings: under ``stop``, a child that
ignores SIGTERM (grace 60 s) holds the daemon in its shutdown, and the other
streams must have ended properly *while the daemon is still there*, long before
aiohttp's timeout could have cut them; under ``detach``, every stream must end
with its proper ending (a cut-off connection would have none).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
from typing import Any

from daemon.client import Client
from tests.helpers import IGNORE_TERM, alive, wait_for

SHUTDOWN_EVENT = b'event: shutdown\ndata: {"reason":"the daemon is shutting down"}\n\n'


class Stream(threading.Thread):
    """One HTTP request read to its end in a thread: status, body, and whether it ended
    properly (a complete chunked body) or was cut off."""

    def __init__(self, d: Any, path: str, method: str = "GET", body: Any = None) -> None:
        super().__init__(daemon=True)
        self.d, self.path, self.method, self.body = d, path, method, body
        self.status: int | None = None
        self.data = b""
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=120)
        try:
            headers = dict(self.d.headers())
            payload = None
            if self.body is not None:
                payload = json.dumps(self.body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(self.method, self.path, body=payload, headers=headers)
            response = conn.getresponse()
            self.status = response.status
            while chunk := response.read1(65536):
                self.data += chunk
        except BaseException as exc:       # a cut-off stream: IncompleteRead, reset
            self.error = exc
        finally:
            conn.close()
            self.ended.set()

    def until(self, text: bytes) -> None:
        wait_for(lambda: text in self.data or self.ended.is_set(), what=f"{text!r} from {self.path}")
        assert text in self.data, (self.status, self.data, self.error)

    def result(self, timeout: float = 30.0) -> bytes:
        """The whole body, once the stream ended properly (asserted)."""
        assert self.ended.wait(timeout), f"{self.path} did not end"
        assert self.error is None, f"{self.path} was cut off: {self.error!r} after {self.data!r}"
        return self.data


def _sse_events(body: bytes) -> list[str]:
    return [line[len(b"event: "):].decode() for line in body.split(b"\n") if line.startswith(b"event: ")]


def test_streams_end_while_a_stopping_daemon_still_waits_for_its_child(daemon: Any) -> None:
    d = daemon("--shutdown", "stop", "--max-concurrent", "1").start()
    sh = Client(socket_path=d.socket_path)
    held = sh.start(IGNORE_TERM, grace=60)          # running: holds the one slot and the shutdown
    queued = sh.start(["echo", "never runs"])       # queued behind it: this shutdown leaves it queued
    assert queued["state"] == "queued"
    held_follow = Stream(d, f"/processes/{held['id']}/output?follow=1")
    held_wait = Stream(d, f"/processes/{held['id']}/wait?timeout=600")
    queued_follow = Stream(d, f"/processes/{queued['id']}/output?follow=1")
    queued_wait = Stream(d, f"/processes/{queued['id']}/wait?timeout=600")
    events = Stream(d, "/events")
    tl_follow = Stream(d, f"/api/v1/processes/{held['pid']}/stdout/follow")
    streams = [held_wait, queued_wait, held_follow, queued_follow, events, tl_follow]
    for stream in streams:
        stream.start()
    held_follow.until(b"ready")                     # its SIGTERM handler is in place
    tl_follow.until(b'"line":"ready"')
    events.until(b": stablehand events")
    wait_for(lambda: queued_follow.status == 200, what="the queued process's follow to answer")
    try:
        d.proc.send_signal(signal.SIGTERM)
        # The streams this shutdown does not end the subject of end now, properly...
        assert queued_follow.result() == b""
        assert _sse_events(events.result())[-1] == "shutdown"
        assert events.data.endswith(SHUTDOWN_EVENT)
        queued_wait.result()
        assert queued_wait.status == 503
        assert json.loads(queued_wait.data) == {"error": "the daemon is shutting down"}
        # ...while the daemon is still stopping its SIGTERM-ignoring child (grace 60 s),
        # whose own streams go on until it ends.
        assert d.proc.poll() is None and alive(held["pid"])
        assert not held_follow.ended.is_set() and not held_wait.ended.is_set()
        assert not tl_follow.ended.is_set()
    finally:
        if alive(held["pid"]):
            os.kill(held["pid"], signal.SIGKILL)
    assert b"ready" in held_follow.result()
    held_wait.result()
    assert held_wait.status == 200
    assert json.loads(held_wait.data)["state"] == "idle"
    assert _sse_events(tl_follow.result())[-1] == "eof"      # its output is complete
    assert d.proc.wait(30) == 0
    assert "Error handling request" not in d.log() and "Traceback" not in d.log()


def test_streams_end_properly_when_a_detaching_daemon_stops(daemon: Any) -> None:
    d = daemon("--shutdown", "detach").start()      # the children outlive the daemon
    sh = Client(socket_path=d.socket_path)
    child = sh.start(["sh", "-c", "echo started; exec sleep 60"])
    stubborn = sh.start(IGNORE_TERM)
    wait_for(lambda: b"ready" in sh.output(stubborn["id"]), what="the SIGTERM handler")
    wait = Stream(d, f"/processes/{child['id']}/wait?timeout=600")
    wait.start()
    graceful = Stream(d, f"/api/process/terminate-gracefully/{stubborn['pid']}", "POST",
                      {"timeout": 600})                # seed 000: answers once the tree is gone
    graceful.start()
    wait_for(lambda: sh.get(stubborn["id"])["state"] == "terminating", what="the 000 stop")
    follow = Stream(d, f"/processes/{child['id']}/output?follow=1&timestamps=1")
    events = Stream(d, "/events")
    tl_follow = Stream(d, f"/api/v1/processes/{child['pid']}/output/follow")
    run = Stream(d, "/api/v1/processes/run", "POST",
                 {"command": "sh", "args": ["-c", "echo ran; exec sleep 60"]})
    for stream in (follow, events, tl_follow, run):
        stream.start()
    follow.until(b" started\n")
    events.until(b": stablehand events")
    tl_follow.until(b'"line":"started"')
    run.until(b'"line":"ran"')
    ran_pid = json.loads(run.data.split(b"data: ", 1)[1].split(b"\n", 1)[0])["pid"]
    pids = [child["pid"], stubborn["pid"], ran_pid]
    try:
        assert d.stop() == 0
        assert follow.result().endswith(b" started\n")          # the final chunk: a proper end
        assert events.result().endswith(SHUTDOWN_EVENT)
        tl_events = _sse_events(tl_follow.result())
        assert tl_events[-1] == "shutdown" and "eof" not in tl_events   # output not complete
        run_events = _sse_events(run.result())
        assert run_events[0] == "started" and run_events[-1] == "shutdown"
        assert "exit" not in run_events
        wait.result()
        assert (wait.status, json.loads(wait.data)) == (503, {"error": "the daemon is shutting down"})
        graceful.result()                                        # its own failure body, at once
        answer = json.loads(graceful.data)
        assert graceful.status == 400 and answer["success"] is False
        assert answer["error"].startswith("the daemon is shutting down: process ")
        assert all(alive(pid) for pid in pids)                   # detached, not stopped
        assert "Error handling request" not in d.log() and "Traceback" not in d.log()
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
