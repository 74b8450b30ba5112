"""Health checks of a managed run, as plain asyncio.

Nothing here knows the supervisor: :func:`probe` runs one check,
:class:`HealthWatch` runs checks on a schedule and reports through callbacks.
Everything is cancellable; nothing blocks the event loop. Exec probes are in
probes_exec.py (whose children they are, and how none is left behind);
readiness (:func:`daemon.supervisor.readiness.wait_ready`) in readiness.py.

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
success resets the count.

Cost (issue 19: 200 runs checked every second under 5% of a core, B9). A watch
is no task: a timer handle on the loop per due probe. A TCP probe is a raw
non-blocking socket and mostly no await at all: on loopback the handshake (or
the refusal) is done by the time ``connect()`` returns EINPROGRESS, so a second
``connect()`` tells the outcome at once (0 or EISCONN: accepted; an errno:
refused); only a connection still in progress (EALREADY: a full backlog, a
dropped SYN) waits for the socket to turn writable, under a timer for
``timeout_ms``. Not ``loop.sock_connect``: uvloop's resolves ``127.0.0.1``
through ``getaddrinfo`` in its thread pool on every call (it passes no socket
type, so its numeric shortcut never applies), which was most of a probe's cost.
http and exec probes run as one task each, under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Mapping

import aiohttp
import structlog
from yarl import URL

from ..managed import HealthCheck
from .probes_exec import background, errno_words, os_reason, run_exec

log = structlog.get_logger("stablehand.probes")


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
                return await run_exec(check.command, env, cwd)
            if check.port is None:
                raise ValueError(f"a {check.type} check needs a port")
            if check.type == "tcp":
                return await tcp(check.port)
            if check.type != "http":
                raise ValueError(f"unknown health check type {check.type!r}")
            if session is not None:
                return await _http(session, check.port, check.path)
            async with new_session() as own:
                return await _http(own, check.port, check.path)
    except TimeoutError:
        return f"timed out after {check.timeout_ms} ms"


_CONNECTING = frozenset((errno.EINPROGRESS, errno.EALREADY, errno.EINTR))


def _connect(port: int) -> socket.socket | str | None:
    """Start a connection to 127.0.0.1:``port``: None (accepted) or a reason when its
    outcome is known at once (the socket closed), else the socket, still connecting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        code = sock.connect_ex(("127.0.0.1", port))
        if code in _CONNECTING:
            code = sock.connect_ex(("127.0.0.1", port))   # the outcome, if there is one yet
    except BaseException:
        sock.close()
        raise
    if code in _CONNECTING:
        return sock
    sock.close()
    return None if code in (0, errno.EISCONN) else errno_words(code)


class _Connecting:
    """A TCP probe's socket still connecting: ``done(None or reason)`` once it turns
    writable, unless :meth:`close` came first. No task, no future."""

    __slots__ = ("_loop", "_sock", "_done")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 done: Callable[[str | None], None]) -> None:
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._done = done
        try:
            loop.add_writer(sock.fileno(), self._writable)
        except BaseException:
            sock.close()
            raise

    def _writable(self) -> None:
        if self._sock is None:
            return
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.close()
        self._done(errno_words(code) if code else None)

    def close(self) -> None:
        """Stop waiting and close the socket; idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_writer(sock.fileno())   # before the fd can be someone else's
            sock.close()


async def tcp(port: int) -> str | None:
    """A TCP probe, with no timeout of its own (the caller's)."""
    outcome = _connect(port)
    if not isinstance(outcome, socket.socket):
        return outcome
    answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def done(reason: str | None) -> None:
        if not answer.done():
            answer.set_result(reason)
    connecting = _Connecting(asyncio.get_running_loop(), outcome, done)
    try:
        return await answer
    finally:
        connecting.close()


async def _http(session: aiohttp.ClientSession, port: int, path: str) -> str | None:
    url = URL(f"http://127.0.0.1:{port}{path}")
    if url.host != "127.0.0.1" or url.port != port:   # a path can only name a path
        raise ValueError(f"{path!r} is not a path")
    try:
        async with session.get(url, allow_redirects=False) as response:
            status = response.status
    except aiohttp.ClientConnectorError as exc:
        return os_reason(exc.os_error)
    except aiohttp.ClientOSError as exc:   # reset by peer...
        return os_reason(exc)
    except aiohttp.ServerDisconnectedError:
        return "connection closed without an answer"
    except aiohttp.ClientResponseError:
        return "not an HTTP answer"
    except aiohttp.ClientError as exc:
        return f"HTTP request failed: {type(exc).__name__}"
    except OSError as exc:
        return os_reason(exc)
    return None if 200 <= status < 400 else f"HTTP {status}"


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

    Driven by callbacks on the loop (see "Cost" above): a timer handle for the next
    probe; a TCP probe settled inside it or a :class:`_Connecting` under a deadline
    timer; an http or exec probe as a task.
    """

    def __init__(self, check: HealthCheck, *, env: Mapping[str, str], cwd: str | None,
                 on_result: OnResult, on_unhealthy: OnUnhealthy,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.check = check
        self._env = env
        self._cwd = cwd
        self._on_result = on_result
        self._on_unhealthy = on_unhealthy
        self._session = session            # shared and owned by the caller...
        self._own: aiohttp.ClientSession | None = None   # ...or made here, closed at the end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None        # the next probe's start
        self._connecting: _Connecting | None = None           # a TCP probe in flight...
        self._deadline: asyncio.TimerHandle | None = None     # ...and its timeout
        self._task: asyncio.Task[str | None] | None = None    # an http or exec probe in flight
        self._closing: asyncio.Task[None] | None = None       # the end of either, at stop
        self._began = 0.0
        self._stopped = False
        self.consecutive_failures = 0

    @property
    def active(self) -> bool:
        return self._loop is not None and not self._stopped

    def start(self) -> None:
        """Start probing (in the running loop). Does nothing if started or stopped before."""
        if self._loop is not None or self._stopped:
            return
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self.check.initial_delay_ms / 1000, self._probe)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for handle in (self._timer, self._deadline):
            if handle is not None:
                handle.cancel()
        self._timer = self._deadline = None
        if self._connecting is not None:
            self._connecting.close()
            self._connecting = None
        task, own, self._own = self._task, self._own, None
        if task is not None:
            task.cancel()
        if own is not None or task is not None:
            self._closing = background(_ended(task, own))

    async def aclose(self) -> None:
        self.stop()
        if self._closing is not None:
            await asyncio.wait([self._closing])

    def _probe(self) -> None:
        """The timer's callback: start a probe."""
        self._timer = None
        loop, check = self._loop, self.check
        if self._stopped or loop is None:
            return
        self._began = loop.time()
        try:
            if check.type == "tcp" and check.port is not None:
                outcome = _connect(check.port)
                if not isinstance(outcome, socket.socket):
                    self._result(outcome)
                    return
                self._connecting = _Connecting(loop, outcome, self._connected)
                self._deadline = loop.call_at(self._began + check.timeout_ms / 1000,
                                              self._timed_out)
                return
            if check.type == "http" and self._session is None and self._own is None:
                self._own = new_session()
            self._task = loop.create_task(
                probe(check, env=self._env, cwd=self._cwd, session=self._session or self._own),
                name="health-probe")
            self._task.add_done_callback(self._probed)
        except Exception as exc:   # a bug, or no fd left for a socket
            self._failed(exc)

    def _connected(self, reason: str | None) -> None:
        self._connecting = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._result(reason)

    def _timed_out(self) -> None:
        self._deadline = None
        if self._connecting is not None:
            self._connecting.close()
            self._connecting = None
        self._result(f"timed out after {self.check.timeout_ms} ms")

    def _probed(self, task: asyncio.Task[str | None]) -> None:
        if self._task is task:
            self._task = None
        if self._stopped or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._failed(error)
        else:
            self._result(task.result())

    def _result(self, reason: str | None) -> None:
        """A probe's outcome: report it, then end the watch or arm the next probe."""
        check = self.check
        self.consecutive_failures = 0 if reason is None else self.consecutive_failures + 1
        try:
            self._on_result(reason is None, reason, self.consecutive_failures)
            if self._stopped:   # stopped by on_result
                return
            if reason is not None and self.consecutive_failures >= check.failure_threshold:
                self.stop()
                self._on_unhealthy(reason)
                return
        except Exception as exc:
            self._failed(exc)
            return
        assert self._loop is not None
        self._timer = self._loop.call_at(self._began + check.interval_ms / 1000, self._probe)

    def _failed(self, error: BaseException) -> None:
        log.error("health.watch_failed", check=self.check.type, error=repr(error))
        self.stop()


async def _ended(task: asyncio.Task[str | None] | None, own: aiohttp.ClientSession | None) -> None:
    """A stopped watch's probe task ended (cancelled: an exec probe killed and reaped), then
    its own session closed."""
    if task is not None:
        await asyncio.wait([task])
    if own is not None:
        await own.close()
