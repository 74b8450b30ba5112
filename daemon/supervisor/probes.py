"""Health checks and readiness of a managed run, as plain asyncio.

Nothing here knows the supervisor: :func:`probe` runs one check,
:class:`HealthWatch` runs checks on a schedule and reports through callbacks,
:func:`wait_ready` returns once a run's ready condition holds. Everything is
cancellable; nothing blocks the event loop.

What counts as healthy (decisions where the issue is silent):

* ``http``: ``GET http://127.0.0.1:{port}{path}`` answered 2xx or 3xx. Redirects
  are not followed (a 3xx is the answer), the body is never read, and nothing is
  kept between probes: no keep-alive, no cookies; no proxy from the environment.
* ``tcp``: a connection to ``127.0.0.1:{port}`` accepted (then closed at once).
* ``exec``: ``command`` (argv, no shell) exits 0.
* Any probe, spawn or connect included, must end within ``timeout_ms``. Reasons
  are short: ``"HTTP 503"``, ``"connection refused"`` (the errno's words),
  ``"timed out after 500 ms"``, ``"exited with status 1"``, ``"killed by SIGSEGV"``.

Timing. A :class:`HealthWatch` waits ``initial_delay_ms``, then starts a probe
every ``interval_ms``, start to start; probes never overlap (one that overran is
followed at once). ``failure_threshold`` failures in a row are reported once and
end the watch (the supervisor restarts the run and watches the new one); a
success resets the count. Readiness by health check ignores ``initial_delay_ms``
and ``failure_threshold``: it probes every ``poll_ms`` until one passes, so a run
is ``running`` as soon as it answers.

Exec probes are the daemon's own children, not the keeper's (the keeper starts
and reaps the processes clients asked for). A probe is no record: no output to
capture, no exit to journal, no one but the daemon wants its status, and it
ends within ``timeout_ms``; through the keeper it would cost a round trip and a
table entry each, and wait behind a busy keeper. It is spawned with
``asyncio.create_subprocess_exec``, stdio on /dev/null, in a session (so a
process group) of its own. The loop's child watcher reaps it, by its pid only
(asyncio ``waitpid(pid)``, uvloop's libuv likewise per pid it spawned, never
``waitpid(-1)``), so neither can take the keeper's status, which the daemon reaps
itself. A probe that overruns or is cancelled has its whole group SIGKILLed
while its leader is unreaped (the group id still its own), then is reaped; one
cancelled mid-spawn is killed and reaped once spawned. After a probe exits,
whatever it left in its group is SIGKILLed too (a group id is not handed out
again while it has members), so ``sh -c 'x &'`` leaves nothing. A process that
left the group (``setsid``) is beyond reach; if the daemon dies mid-probe, the
probe runs on to its own end.

Readiness by log line reads the run's stdout and stderr through an
:class:`OutputSource` (:class:`daemon.output.OutputReader`, the one reader of
output files: in a thread, skipping what the output cap dropped), from offsets
the caller gives (where this run's output starts). Only complete lines match
(``re.search``), at most :data:`MAX_LINE` bytes of each: a longer line is matched
on its head once its newline arrives; a line whose head the cap dropped unread
is not matched. Matching runs in a thread too: the regex is a client's, and a
slow one must not stall the loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Protocol

import aiohttp
import structlog
from yarl import URL

from .. import oskit
from ..managed import HealthCheck, Ready

log = structlog.get_logger("stablehand.probes")

MAX_LINE = 64 * 1024          # bytes of a line kept for matching; the rest of it is cut
READ_BYTES = 64 * 1024        # bytes asked for per output read
READY_CONNECT_MS = 1000       # how long a ``ready.port`` connection attempt may take


# --- one probe ---------------------------------------------------------------------------

def new_session() -> aiohttp.ClientSession:
    """A client session for http probes: no keep-alive, no cookies, no proxies, no timeouts
    of its own (each probe has its ``timeout_ms``). Make it inside the running loop."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, resolver=aiohttp.ThreadedResolver()),
        timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False, auto_decompress=False, headers={"User-Agent": "stablehand-probe"})


async def probe(check: HealthCheck, *, env: Mapping[str, str], cwd: str | None,
                session: aiohttp.ClientSession | None = None) -> str | None:
    """One probe: None if healthy, else a short reason (``"connection refused"``,
    ``"HTTP 503"``, ``"timed out after 500 ms"``, ``"exited with status 1"``).

    ``session`` serves http probes (one made for this probe if None). ``env`` and
    ``cwd`` are an exec probe's. Cancelling it leaves no process behind.
    """
    try:
        async with asyncio.timeout(check.timeout_ms / 1000):
            if check.type == "exec":
                return await _exec(check.command, env, cwd)
            if check.port is None:
                raise ValueError(f"a {check.type} check needs a port")
            if check.type == "tcp":
                return await _tcp(check.port)
            if check.type != "http":
                raise ValueError(f"unknown health check type {check.type!r}")
            if session is not None:
                return await _http(session, check.port, check.path)
            async with new_session() as own:
                return await _http(own, check.port, check.path)
    except TimeoutError:
        return f"timed out after {check.timeout_ms} ms"


def _os_reason(exc: OSError) -> str:
    """The errno's own words ("connection refused"), not Python's ("Connect call failed")."""
    text = os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)
    return text[:1].lower() + text[1:]


async def _tcp(port: int) -> str | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except OSError as exc:
        return _os_reason(exc)
    finally:
        sock.close()
    return None


async def _http(session: aiohttp.ClientSession, port: int, path: str) -> str | None:
    url = URL(f"http://127.0.0.1:{port}{path}")
    if url.host != "127.0.0.1" or url.port != port:   # a path can only name a path
        raise ValueError(f"{path!r} is not a path")
    try:
        async with session.get(url, allow_redirects=False) as response:
            status = response.status
    except aiohttp.ClientConnectorError as exc:
        return _os_reason(exc.os_error)
    except aiohttp.ClientOSError as exc:   # reset by peer...
        return _os_reason(exc)
    except aiohttp.ServerDisconnectedError:
        return "connection closed without an answer"
    except aiohttp.ClientResponseError:
        return "not an HTTP answer"
    except aiohttp.ClientError as exc:
        return f"HTTP request failed: {type(exc).__name__}"
    except OSError as exc:
        return _os_reason(exc)
    return None if 200 <= status < 400 else f"HTTP {status}"


async def _exec(command: Sequence[str], env: Mapping[str, str], cwd: str | None) -> str | None:
    if not command:
        raise ValueError("an exec check needs a command")
    spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=dict(env), cwd=cwd, start_new_session=True))
    try:
        proc = await asyncio.shield(spawning)     # a spawn is never cut in half...
    except asyncio.CancelledError:                # ...the child it makes is killed and reaped
        await _in_background(_discard(spawning))
        raise
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename and exc.filename != command[0] else ""
        return f"cannot run {command[0]}: {_os_reason(exc)}{where}"
    try:
        code = await proc.wait()
    except asyncio.CancelledError:     # timed out or stopped: the whole group, leader unreaped
        oskit.signal_group(proc.pid, signal.SIGKILL)
        await _in_background(_reap(proc))
        raise
    oskit.signal_group(proc.pid, signal.SIGKILL)   # what it left running in its group
    if code == 0:
        return None
    if code < 0:
        return f"killed by {oskit.signal_name(-code)}"
    return f"exited with status {code}"


async def _reap(proc: asyncio.subprocess.Process) -> None:
    await proc.wait()


async def _discard(spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """A probe cancelled while spawning: once spawned, kill its group and reap it."""
    try:
        proc = await spawning
    except OSError:
        return
    oskit.signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


_CLEANUPS: set[asyncio.Task[None]] = set()   # held until done (the loop holds weak references)


async def _in_background(cleanup: Coroutine[None, None, None]) -> None:
    """Await ``cleanup``; cancelled again meanwhile, it still runs to its end."""
    task = asyncio.ensure_future(cleanup)
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)


# --- a run's health, on a schedule -------------------------------------------------------

OnResult = Callable[[bool, "str | None", int], None]
OnUnhealthy = Callable[[str], None]


class HealthWatch:
    """Probes one run: waits ``initial_delay_ms``, then starts a probe every
    ``interval_ms`` (start to start; never two at once, the next at once if one
    overran). Calls ``on_result(healthy, reason, consecutive_failures)`` after each
    probe and ``on_unhealthy(reason)`` once, when the failures in a row reach
    ``failure_threshold``; then it stops (the supervisor restarts the run and makes
    a new watch).

    :meth:`stop` cancels it: idempotent, never raises, safe inside its own callbacks
    (no callback follows it). :meth:`aclose` also waits until the probe in flight has
    ended (an exec probe killed and reaped). A callback that raises ends the watch,
    logged as ``health.watch_failed``.
    """

    def __init__(self, check: HealthCheck, *, env: Mapping[str, str], cwd: str | None,
                 on_result: OnResult, on_unhealthy: OnUnhealthy,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.check = check
        self._env = env
        self._cwd = cwd
        self._on_result = on_result
        self._on_unhealthy = on_unhealthy
        self._session = session            # shared and owned by the caller, or made here
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.consecutive_failures = 0

    @property
    def active(self) -> bool:
        return self._task is not None and not self._stopped and not self._task.done()

    def start(self) -> None:
        """Start probing (in the running loop). Does nothing if started or stopped before."""
        if self._task is not None or self._stopped:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-watch")
        self._task.add_done_callback(self._done)

    def stop(self) -> None:
        self._stopped = True
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()   # from a callback (inside the task) the flag alone ends it

    async def aclose(self) -> None:
        self.stop()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait([task])

    async def _run(self) -> None:
        check = self.check
        loop = asyncio.get_running_loop()
        await asyncio.sleep(check.initial_delay_ms / 1000)
        own = new_session() if check.type == "http" and self._session is None else None
        session = self._session if own is None else own
        try:
            while not self._ended():
                started = loop.time()
                reason = await probe(check, env=self._env, cwd=self._cwd, session=session)
                if self._ended():
                    return
                self.consecutive_failures = 0 if reason is None else self.consecutive_failures + 1
                self._on_result(reason is None, reason, self.consecutive_failures)
                if self._ended():   # stopped by on_result
                    return
                if reason is not None and self.consecutive_failures >= check.failure_threshold:
                    self._stopped = True
                    self._on_unhealthy(reason)
                    return
                await asyncio.sleep(max(0.0, started + check.interval_ms / 1000 - loop.time()))
        finally:
            if own is not None:
                await own.close()

    def _ended(self) -> bool:
        return self._stopped   # a call, so that type checkers see it change across awaits

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("health.watch_failed", check=self.check.type, error=repr(task.exception()))


# --- readiness -----------------------------------------------------------------------------

class OutputSource(Protocol):
    """Where a run's output is read: :class:`daemon.output.OutputReader` is one."""

    async def read(self, offset: int, limit: int = ...) -> tuple[int, bytes]: ...


async def wait_ready(ready: Ready, *, check: HealthCheck | None, env: Mapping[str, str],
                     cwd: str | None, outputs: Sequence[tuple[OutputSource, int]] = (),
                     poll_ms: int = 50, session: aiohttp.ClientSession | None = None) -> None:
    """Return once the run is ready; the caller cancels it (when the run ends, say).

    * ``ready.port``: ``127.0.0.1:port`` accepts a connection;
    * ``ready.log_line``: a complete line of one of ``outputs`` (each a source and
      the offset this run's output starts at: stdout and stderr) matches the regex;
    * ``ready.health_check``: ``probe(check)`` passes once.

    Checks every ``poll_ms``, start to start. A ``Ready()`` with no condition is met
    at once.
    """
    if ready.port is not None:
        port = ready.port

        async def connects() -> bool:
            try:
                async with asyncio.timeout(READY_CONNECT_MS / 1000):
                    return await _tcp(port) is None
            except TimeoutError:
                return False
        await _until(connects, poll_ms)
    elif ready.log_line is not None:
        if not outputs:
            raise ValueError("ready.log_line needs the run's outputs")
        await _until_line(re.compile(ready.log_line), outputs, poll_ms)
    elif ready.health_check:
        if check is None:
            raise ValueError("ready.health_check needs a health check")
        health = check

        async def passes(session: aiohttp.ClientSession | None) -> bool:
            return await probe(health, env=env, cwd=cwd, session=session) is None
        if check.type != "http" or session is not None:
            await _until(lambda: passes(session), poll_ms)
        else:
            async with new_session() as own:
                await _until(lambda: passes(own), poll_ms)


async def _until(attempt: Callable[[], Awaitable[bool]], poll_ms: int) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        if await attempt():
            return
        await asyncio.sleep(max(0.0, started + poll_ms / 1000 - loop.time()))


class _Lines:
    """Complete lines of one stream from an offset on, in bounded memory."""

    def __init__(self, source: OutputSource, start: int) -> None:
        self.source = source
        self.position = start
        self.partial = bytearray()   # the line being read, at most MAX_LINE bytes of it
        self.headless = False        # the cap dropped the start of the line being read

    async def read(self) -> tuple[list[bytes], bool]:
        """(the lines completed by the next chunk, whether more may be waiting)."""
        start, data = await self.source.read(self.position, READ_BYTES)
        if start > self.position:    # dropped before we read them: that line has no head
            self.partial.clear()
            self.headless = True
        self.position = start + len(data)
        return self.feed(data), len(data) >= READ_BYTES

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        at = 0
        while (end := data.find(b"\n", at)) >= 0:
            self.partial += data[at:min(end, at + MAX_LINE - len(self.partial))]
            if not self.headless:
                lines.append(bytes(self.partial))
            self.partial.clear()
            self.headless = False
            at = end + 1
        self.partial += data[at:at + max(0, MAX_LINE - len(self.partial))]
        return lines


def _matches(regex: re.Pattern[str], lines: list[bytes]) -> bool:
    return any(regex.search(line.decode(errors="replace").removesuffix("\r")) for line in lines)


async def _until_line(regex: re.Pattern[str], outputs: Sequence[tuple[OutputSource, int]],
                      poll_ms: int) -> None:
    streams = [_Lines(source, start) for source, start in outputs]
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        for stream in streams:
            more = True
            while more:
                lines, more = await stream.read()
                if lines:
                    matched: bool = await asyncio.to_thread(_matches, regex, lines)
                    if matched:
                        return
        await asyncio.sleep(max(0.0, started + poll_ms / 1000 - loop.time()))
