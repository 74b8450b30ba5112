"""Health probes, HealthWatch and readiness against real servers, real children, real files."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from daemon.keeper.pump import punch
from daemon.managed import HealthCheck, Ready
from daemon.output import OutputStore
from daemon.supervisor import probes, readiness
from daemon.supervisor.probes import HealthWatch, probe
from daemon.supervisor.readiness import MAX_LINE, wait_ready
from tests.helpers import PYTHON, alive, async_wait_for, free_port, wait_for

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


class Web:
    """A real aiohttp app on 127.0.0.1: /health answers ``status`` (or the next of
    ``script``), /moved a 302, /slow never answers, /busy counts overlapping requests."""

    def __init__(self) -> None:
        self.status = 200
        self.script: list[int] = []
        self.hits = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.port = 0

    async def health(self, request: web.Request) -> web.Response:
        self.hits += 1
        status = self.script.pop(0) if self.script else self.status
        return web.Response(status=status, text="x" * 100_000)   # a body nobody reads

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/elsewhere")   # never followed

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def busy(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.03)    # a slow answer (longer than the interval), not a wait
        finally:
            self.in_flight -= 1
        return web.Response(text="ok")


@pytest.fixture
async def server(aiohttp_server: Any) -> Web:
    state = Web()
    app = web.Application()
    app.router.add_get("/health", state.health)
    app.router.add_get("/moved", state.moved)
    app.router.add_get("/slow", state.slow)
    app.router.add_get("/busy", state.busy)
    running = await aiohttp_server(app, host="127.0.0.1")
    state.port = running.port
    return state


@pytest.fixture
async def tcp_server() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")    # a request, if one comes: read it, answer nothing
        writer.close()
    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()


def http(port: int, path: str = "/health", **fields: Any) -> HealthCheck:
    return HealthCheck("http", port=port, path=path, **fields)


def command(script: str, **fields: Any) -> HealthCheck:
    return HealthCheck("exec", command=("sh", "-c", script), **fields)


def pids_in(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


async def gone(pids: list[int]) -> None:
    async def all_gone() -> bool:
        return not any(alive(pid) for pid in pids)
    await async_wait_for(all_gone, what=f"{pids} to be gone")


# --- http -----------------------------------------------------------------------------------

async def test_http_is_healthy_on_2xx_and_3xx_and_not_on_5xx(server: Web) -> None:
    assert await probe(http(server.port), env=ENV, cwd=None) is None
    assert await probe(http(server.port, "/moved"), env=ENV, cwd=None) is None   # not followed
    server.status = 503
    assert await probe(http(server.port), env=ENV, cwd=None) == "HTTP 503"
    server.status = 404
    assert await probe(http(server.port, "/health?x=1"), env=ENV, cwd=None) == "HTTP 404"


async def test_http_refused_and_timed_out(server: Web) -> None:
    assert await probe(http(free_port()), env=ENV, cwd=None) == "connection refused"
    check = http(server.port, "/slow", timeout_ms=100)
    assert await probe(check, env=ENV, cwd=None) == "timed out after 100 ms"


async def test_http_to_something_that_is_not_http(tcp_server: int) -> None:
    reason = await probe(http(tcp_server), env=ENV, cwd=None)
    assert reason == "connection closed without an answer"

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()      # until the probe hangs up
        writer.close()
    listener = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        reason = await probe(http(listener.sockets[0].getsockname()[1]), env=ENV, cwd=None)
        assert reason == "not an HTTP answer"
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_path_cannot_name_another_host(server: Web) -> None:
    # "//host/x" and "/@host" are paths on 127.0.0.1, never another authority
    for path in ("//example.com/health", "/@example.com/"):
        assert await probe(http(server.port, path), env=ENV, cwd=None) == "HTTP 404"


# --- tcp -------------------------------------------------------------------------------------

async def test_tcp_accepted_then_refused() -> None:
    accepted = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()
    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    check = HealthCheck("tcp", port=port)
    try:
        assert await probe(check, env=ENV, cwd=None) is None
        await asyncio.wait_for(accepted.wait(), 10)
    finally:
        listener.close()
        await listener.wait_closed()
    assert await probe(check, env=ENV, cwd=None) == "connection refused"


@pytest.fixture
def full_backlog() -> Iterator[socket.socket]:
    """A listener that never accepts, its queue full: a connection to it stays in
    SYN_SENT (its SYNs dropped) until something is accepted. The one slow path of a
    TCP probe on loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=10)   # fills the queue
    try:
        yield listener
    finally:
        filler.close()
        listener.close()


def drain(listener: socket.socket) -> None:
    listener.setblocking(False)
    try:
        while True:
            listener.accept()[0].close()
    except BlockingIOError:
        pass


async def test_tcp_times_out_on_a_full_backlog(full_backlog: socket.socket) -> None:
    check = HealthCheck("tcp", port=full_backlog.getsockname()[1], timeout_ms=200)
    assert await probe(check, env=ENV, cwd=None) == "timed out after 200 ms"


async def test_tcp_accepted_once_the_backlog_drains(full_backlog: socket.socket) -> None:
    # connect() cannot tell at once: the probe waits for the socket to turn writable
    check = HealthCheck("tcp", port=full_backlog.getsockname()[1], timeout_ms=60_000)
    task = asyncio.ensure_future(probe(check, env=ENV, cwd=None))
    try:
        done, _ = await asyncio.wait([task], timeout=0.3)
        assert not done
        drain(full_backlog)                 # the SYN sent again (after ~1 s) gets in
        assert await asyncio.wait_for(task, 20) is None
    finally:
        task.cancel()
        drain(full_backlog)


# --- exec -----------------------------------------------------------------------------------

async def test_exec_exit_status_is_the_answer() -> None:
    assert await probe(command("exit 0"), env=ENV, cwd=None) is None
    assert await probe(command("exit 1"), env=ENV, cwd=None) == "exited with status 1"
    assert await probe(command("kill -9 $$"), env=ENV, cwd=None) == "killed by SIGKILL"


async def test_exec_that_cannot_run(tmp_path: Path) -> None:
    missing = HealthCheck("exec", command=(str(tmp_path / "nope"),))
    reason = await probe(missing, env=ENV, cwd=None)
    assert reason == f"cannot run {tmp_path / 'nope'}: no such file or directory"
    reason = await probe(command("exit 0"), env=ENV, cwd=str(tmp_path / "no-dir"))
    assert reason == f"cannot run sh: no such file or directory: {tmp_path / 'no-dir'}"


async def test_exec_gets_env_and_cwd_and_nothing_on_stdio(tmp_path: Path) -> None:
    script = 'test "$PROBE" = yes && test "$(pwd)" = "$WANT" && ! read -r line && test -z "$OTHER"'
    env = {**ENV, "PROBE": "yes", "WANT": str(tmp_path)}
    os.environ["OTHER"] = "leaked"     # only the env given reaches the probe
    try:
        assert await probe(command(script), env=env, cwd=str(tmp_path)) is None
    finally:
        del os.environ["OTHER"]
    assert await probe(command(script), env={**env, "PROBE": "no"}, cwd=str(tmp_path)) \
        == "exited with status 1"


async def test_exec_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    check = command(f"sleep 5 & echo $$ $! > {pidfile}; wait", timeout_ms=300)
    assert await probe(check, env=ENV, cwd=None) == "timed out after 300 ms"
    pids = pids_in(pidfile)
    assert len(pids) == 2            # sh and its sleep
    await gone(pids)
    assert not (Path("/proc") / str(pids[0])).exists()    # the leader is reaped, not a zombie


async def test_exec_leaves_nothing_running_after_it_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    assert await probe(command(f"sleep 30 & echo $! > {pidfile}; exit 0"), env=ENV, cwd=None) is None
    await gone(pids_in(pidfile))


async def test_a_cancelled_exec_probe_leaves_nothing(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    task = asyncio.ensure_future(probe(command(f"echo $$ > {pidfile}; exec sleep 30",
                                               timeout_ms=60_000), env=ENV, cwd=None))

    async def started() -> bool:
        return bool(pids_in(pidfile))
    await async_wait_for(started, what="the probe to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await gone(pids_in(pidfile))


async def test_cancelled_while_spawning() -> None:
    # cancelled at once: the spawn completes and its child is killed, reaped by the loop
    for _ in range(5):
        task = asyncio.ensure_future(probe(command("sleep 30", timeout_ms=60_000), env=ENV, cwd=None))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # the no_leaks fixture checks that no sleep is left


UVLOOP_SCRIPT = """
import asyncio, json, sys, uvloop
from daemon.managed import HealthCheck
from daemon.supervisor.probes import probe

def sh(script, **fields):
    return HealthCheck("exec", command=("sh", "-c", script), **fields)

async def main():
    env = {"PATH": "/usr/bin:/bin"}
    task = asyncio.ensure_future(probe(sh("sleep 30", timeout_ms=60000), env=env, cwd=None))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return [await probe(sh("exit 0"), env=env, cwd=None),
            await probe(sh("exit 3"), env=env, cwd=None),
            await probe(sh(f"sleep 5 & echo $$ $! > {sys.argv[1]}; wait", timeout_ms=200),
                        env=env, cwd=None)]

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    print(json.dumps(runner.run(main())))
"""


def test_exec_under_uvloop(tmp_path: Path) -> None:
    # The daemon's default loop. In a child of its own: libuv keeps a process-wide signal pipe.
    pytest.importorskip("uvloop")
    pidfile = tmp_path / "pids"
    done = subprocess.run([PYTHON, "-c", UVLOOP_SCRIPT, str(pidfile)], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [None, "exited with status 3", "timed out after 200 ms"]
    pids = pids_in(pidfile)
    assert len(pids) == 2
    wait_for(lambda: not any(alive(pid) for pid in pids), what="the timed-out probe to be gone")


TCP_UVLOOP_SCRIPT = """
import asyncio, json, os, socket, uvloop
from daemon.managed import HealthCheck
from daemon.supervisor.probes import HealthWatch, probe

async def main():
    fds = len(os.listdir("/proc/self/fd"))
    out = {}
    up = socket.socket(); up.bind(("127.0.0.1", 0)); up.listen(16)
    full = socket.socket(); full.bind(("127.0.0.1", 0)); full.listen(0)
    filler = socket.create_connection(full.getsockname(), timeout=10)
    check = lambda s, **f: HealthCheck("tcp", port=s.getsockname()[1], **f)
    out["up"] = await probe(check(up), env={}, cwd=None)
    out["full"] = await probe(check(full, timeout_ms=200), env={}, cwd=None)
    late = asyncio.ensure_future(probe(check(full, timeout_ms=60000), env={}, cwd=None))
    await asyncio.sleep(0.2)
    full.setblocking(False)
    full.accept()[0].close()                 # room for the SYN sent again
    out["late"] = await asyncio.wait_for(late, 20)
    results = []
    watch = HealthWatch(check(up, initial_delay_ms=0, interval_ms=10), env={}, cwd=None,
                        on_result=lambda *r: results.append(r), on_unhealthy=print)
    watch.start()
    while len(results) < 3:
        await asyncio.sleep(0.01)
    await watch.aclose()
    out["watch"] = results[:3]
    port = up.getsockname()[1]
    up.close()
    out["refused"] = await probe(HealthCheck("tcp", port=port), env={}, cwd=None)
    filler.close(); full.close()
    out["fds"] = len(os.listdir("/proc/self/fd")) - fds
    return out

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    print(json.dumps(runner.run(main())))
"""


def test_tcp_under_uvloop() -> None:
    # The daemon's default loop, whose add_writer/remove_writer are libuv's.
    pytest.importorskip("uvloop")
    done = subprocess.run([PYTHON, "-c", TCP_UVLOOP_SCRIPT], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "up": None, "full": "timed out after 200 ms", "late": None,
        "watch": [[True, None, 0]] * 3, "refused": "connection refused", "fds": 0}


# --- HealthWatch ------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[bool, str | None, int]] = []
        self.unhealthy: list[str] = []
        self.watch: HealthWatch | None = None
        self.stop_after: int | None = None

    def on_result(self, healthy: bool, reason: str | None, failures: int) -> None:
        self.results.append((healthy, reason, failures))
        if self.stop_after is not None and len(self.results) >= self.stop_after:
            assert self.watch is not None
            self.watch.stop()

    def on_unhealthy(self, reason: str) -> None:
        self.unhealthy.append(reason)

    def watch_for(self, check: HealthCheck, **kwargs: Any) -> HealthWatch:
        self.watch = HealthWatch(check, env=ENV, cwd=None, on_result=self.on_result,
                                 on_unhealthy=self.on_unhealthy, **kwargs)
        return self.watch


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    yield recorder
    if recorder.watch is not None:
        await recorder.watch.aclose()


FAST = {"initial_delay_ms": 0, "interval_ms": 10, "timeout_ms": 2000}


async def test_failures_reach_the_threshold_once_then_probing_stops(server: Web, recorder: Recorder) -> None:
    server.status = 503
    watch = recorder.watch_for(http(server.port, failure_threshold=3, **FAST))
    watch.start()

    async def unhealthy() -> bool:
        return bool(recorder.unhealthy)
    await async_wait_for(unhealthy, what="on_unhealthy")
    await watch.aclose()
    assert recorder.unhealthy == ["HTTP 503"]
    assert recorder.results == [(False, "HTTP 503", 1), (False, "HTTP 503", 2), (False, "HTTP 503", 3)]
    assert server.hits == 3 and not watch.active


async def test_a_success_resets_the_count(server: Web, recorder: Recorder) -> None:
    server.script = [503, 503, 200, 503, 503, 503]
    recorder.watch_for(http(server.port, failure_threshold=3, **FAST)).start()

    async def unhealthy() -> bool:
        return bool(recorder.unhealthy)
    await async_wait_for(unhealthy, what="on_unhealthy")
    assert [failures for _, _, failures in recorder.results] == [1, 2, 0, 1, 2, 3]
    assert recorder.results[2] == (True, None, 0)


async def test_stop_inside_on_result_ends_it_without_on_unhealthy(server: Web, recorder: Recorder) -> None:
    server.status = 500
    recorder.stop_after = 1
    watch = recorder.watch_for(http(server.port, failure_threshold=1, **FAST))
    watch.start()

    async def ended() -> bool:
        return not watch.active
    await async_wait_for(ended, what="the watch to end")
    assert recorder.results == [(False, "HTTP 500", 1)]
    assert recorder.unhealthy == []
    watch.stop()       # idempotent
    watch.stop()
    await watch.aclose()


async def test_probes_never_overlap(server: Web, recorder: Recorder) -> None:
    recorder.stop_after = 5
    recorder.watch_for(http(server.port, "/busy", failure_threshold=1, **FAST)).start()

    async def five() -> bool:
        return len(recorder.results) >= 5
    await async_wait_for(five, what="five probes")
    assert server.most_in_flight == 1
    assert all(healthy for healthy, _, _ in recorder.results)


async def test_a_shared_session_is_used_and_left_open(server: Web, recorder: Recorder) -> None:
    async with probes.new_session() as session:
        recorder.stop_after = 2
        watch = recorder.watch_for(http(server.port, **FAST), session=session)
        watch.start()

        async def two() -> bool:
            return len(recorder.results) >= 2
        await async_wait_for(two, what="two probes")
        await watch.aclose()
        assert not session.closed
        assert await probe(http(server.port), env=ENV, cwd=None, session=session) is None


async def test_stopping_kills_an_exec_probe_in_flight(tmp_path: Path, recorder: Recorder) -> None:
    pidfile = tmp_path / "pids"
    watch = recorder.watch_for(command(f"echo $$ > {pidfile}; exec sleep 30", initial_delay_ms=0,
                                       timeout_ms=60_000))
    watch.start()

    async def started() -> bool:
        return bool(pids_in(pidfile))
    await async_wait_for(started, what="the exec probe to start")
    await watch.aclose()
    assert not alive(pids_in(pidfile)[0])
    assert recorder.results == []


async def test_exec_watch_counts_to_unhealthy(recorder: Recorder) -> None:
    recorder.watch_for(command("exit 2", failure_threshold=2, **FAST)).start()

    async def unhealthy() -> bool:
        return bool(recorder.unhealthy)
    await async_wait_for(unhealthy, what="on_unhealthy")
    assert recorder.unhealthy == ["exited with status 2"]
    assert len(recorder.results) == 2


async def test_stop_before_start_and_a_failing_callback(server: Web) -> None:
    idle = HealthWatch(http(server.port, **FAST), env=ENV, cwd=None,
                       on_result=lambda *a: None, on_unhealthy=lambda r: None)
    idle.stop()
    idle.start()          # stopped first: never starts
    assert not idle.active and server.hits == 0

    def broken(healthy: bool, reason: str | None, failures: int) -> None:
        raise RuntimeError("bug")
    watch = HealthWatch(http(server.port, **FAST), env=ENV, cwd=None,
                        on_result=broken, on_unhealthy=lambda r: None)
    with capture_logs() as logs:
        watch.start()

        async def ended() -> bool:
            return not watch.active
        await async_wait_for(ended, what="the watch to end")
        await watch.aclose()      # never raises
    assert [entry["event"] for entry in logs] == ["health.watch_failed"]


async def test_tcp_watch_connects_each_time_then_counts_refusals(recorder: Recorder) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    accepted = 0
    record = recorder.on_result

    def on_result(healthy: bool, reason: str | None, failures: int) -> None:
        nonlocal accepted
        record(healthy, reason, failures)
        try:
            while healthy:
                listener.accept()[0].close()
                accepted += 1
        except BlockingIOError:
            pass
        if len(recorder.results) == 3:
            listener.close()          # the service goes away: refused from now on
    try:
        watch = HealthWatch(HealthCheck("tcp", port=listener.getsockname()[1], failure_threshold=2,
                                        **FAST), env=ENV, cwd=None, on_result=on_result,
                            on_unhealthy=recorder.on_unhealthy)
        recorder.watch = watch
        watch.start()

        async def unhealthy() -> bool:
            return bool(recorder.unhealthy)
        await async_wait_for(unhealthy, what="on_unhealthy")
        assert recorder.results == [(True, None, 0)] * 3 + [(False, "connection refused", 1),
                                                           (False, "connection refused", 2)]
        assert recorder.unhealthy == ["connection refused"] and not watch.active
        assert accepted == 3          # one real connection per healthy probe
    finally:
        listener.close()


async def test_tcp_watch_times_out_and_a_stop_mid_connect_leaves_no_socket(
        full_backlog: socket.socket, recorder: Recorder) -> None:
    port = full_backlog.getsockname()[1]
    recorder.watch_for(HealthCheck("tcp", port=port, failure_threshold=2,
                                   **{**FAST, "timeout_ms": 100})).start()

    async def unhealthy() -> bool:
        return bool(recorder.unhealthy)
    await async_wait_for(unhealthy, what="on_unhealthy")
    assert recorder.unhealthy == ["timed out after 100 ms"]
    assert recorder.results == [(False, "timed out after 100 ms", 1),
                                (False, "timed out after 100 ms", 2)]

    waiting = Recorder()
    watch = waiting.watch_for(HealthCheck("tcp", port=port, **{**FAST, "timeout_ms": 60_000}))
    watch.start()

    async def connecting() -> bool:
        return watch._connecting is not None   # waiting for the socket to turn writable
    await async_wait_for(connecting, what="a connection in progress")
    await watch.aclose()          # its socket closed (the no_leaks fixture counts fds)
    assert waiting.results == [] and not watch.active


# --- readiness ----------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutputStore]:
    store = OutputStore(tmp_path / "output")
    yield store
    store.close()


def append(store: OutputStore, stream: str, data: bytes) -> None:
    with open(store.path(1, stream), "ab") as handle:
        handle.write(data)


async def not_done_yet(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` is still waiting after several polls (a window for a negative claim)."""
    done, _ = await asyncio.wait([task], timeout=0.3)
    return not done


def ready_on_lines(store: OutputStore, regex: str, starts: tuple[int, int] = (0, 0)) -> asyncio.Task[None]:
    outputs = [(store.reader(1, "stdout"), starts[0]), (store.reader(1, "stderr"), starts[1])]
    return asyncio.ensure_future(wait_ready(Ready(log_line=regex), check=None, env=ENV, cwd=None,
                                            outputs=outputs, poll_ms=10))


async def test_ready_by_a_line_split_across_appends(store: OutputStore) -> None:
    append(store, "stdout", b"listening on 1\n")              # the previous run's
    task = ready_on_lines(store, r"listening on \d+$", starts=(len(b"listening on 1\n"), 0))
    try:
        assert await not_done_yet(task)
        append(store, "stdout", b"starting\nlistening on 80")  # matches, but not a line yet
        assert await not_done_yet(task)
        append(store, "stdout", b"80\n")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_ready_by_a_line_on_stderr_with_crlf(store: OutputStore) -> None:
    task = ready_on_lines(store, r"^ready$")
    try:
        append(store, "stdout", b"ready, not quite\n")
        append(store, "stderr", b"ready\r\n")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_a_long_line_is_cut(store: OutputStore) -> None:
    task = ready_on_lines(store, r"ready")
    try:
        append(store, "stdout", b"x" * (MAX_LINE + 10) + b"ready\n")   # past the cut
        assert await not_done_yet(task)
        append(store, "stdout", b"ready\n")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


def test_line_memory_is_bounded() -> None:
    lines = readiness._Lines(source=None, start=0)  # type: ignore[arg-type]
    for _ in range(20):
        assert lines.feed(b"y" * 100_000) == []
    assert len(lines.partial) == MAX_LINE
    assert lines.feed(b"z\nshort\n") == [b"y" * MAX_LINE, b"short"]


async def test_a_line_whose_head_was_dropped_is_not_matched(store: OutputStore) -> None:
    append(store, "stdout", b"A" * 4100 + b" ready tail\n")
    fd = os.open(store.path(1, "stdout"), os.O_WRONLY)
    try:
        punch(fd, 0, 4096)           # what the output cap does
    finally:
        os.close(fd)
    task = ready_on_lines(store, r"ready")
    try:
        assert await not_done_yet(task)
        append(store, "stdout", b"ready\n")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_ready_by_port() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))       # bound, not listening: refused
    try:
        port = sock.getsockname()[1]
        task = asyncio.ensure_future(wait_ready(Ready(port=port), check=None, env=ENV, cwd=None,
                                                poll_ms=10))
        try:
            assert await not_done_yet(task)
            sock.listen()
            await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
    finally:
        sock.close()


async def test_ready_by_health_check(server: Web) -> None:
    server.status = 503
    check = http(server.port, initial_delay_ms=60_000, failure_threshold=1)
    task = asyncio.ensure_future(wait_ready(Ready(health_check=True), check=check, env=ENV, cwd=None,
                                            poll_ms=10))
    try:
        assert await not_done_yet(task)
        assert server.hits > 1            # polled, not failed for good; no initial delay
        server.status = 200
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_ready_by_exec_health_check(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    task = asyncio.ensure_future(wait_ready(Ready(health_check=True), check=command(f"test -e {flag}"),
                                            env=ENV, cwd=None, poll_ms=10))
    try:
        assert await not_done_yet(task)
        flag.touch()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_no_condition_is_ready_at_once_and_bad_arguments_say_so() -> None:
    await asyncio.wait_for(wait_ready(Ready(), check=None, env=ENV, cwd=None), 10)
    with pytest.raises(ValueError, match="outputs"):
        await wait_ready(Ready(log_line="x"), check=None, env=ENV, cwd=None)
    with pytest.raises(ValueError, match="health check"):
        await wait_ready(Ready(health_check=True), check=None, env=ENV, cwd=None)
