"""The listeners: sites whose connections are guarded, one budget per kind of listener.

Each connection a listener accepts runs :class:`~.guarded.GuardedHandler`: a
header deadline (``header_timeout``, 10 s), aiohttp's idle keep-alive timeout
(``keepalive_timeout``, 75 s), a place in a budget with the longest-idle (or
longest-stalled) connection evicted when it is full, and stalled writers cut;
see :mod:`.guarded` for those rules. This module decides which budget a
listener draws on and how large the budgets are.

**A cap on concurrent connections**, one budget per kind of listener: TCP
listeners share ``max_connections`` (1024), Unix-socket listeners share
``socket_max_connections`` (256). The budgets are separate, so no number of
TCP connections can keep a socket client out. A socket passed by systemd draws
on the budget of its family.

File descriptors. The daemon raises its soft ``RLIMIT_NOFILE`` to the hard
limit at start-up (``oskit.raise_nofile_limit``). If that leaves too few for
both budgets plus :data:`FD_RESERVE` for everything else (children, the
registry, output reads), the TCP budget is lowered to fit, with a warning
(``http.tcp_budget_lowered``), so the socket's budget is always backed by real
descriptors.

A client that goes away mid-stream is normal: see :mod:`.streaming`.

``service.py`` only builds a :class:`Connections` and asks it for sites instead
of aiohttp's ``TCPSite``/``UnixSite``/``SockSite``.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from ..config import Config
from .guarded import Budget, GuardedHandler

log = structlog.get_logger("stablehand.http")

FD_RESERVE = 512            # descriptors kept for everything but connections
MIN_TCP_BUDGET = 16         # the TCP budget is never lowered below this


class HandlerFactory:
    """What a listener calls for each accepted connection: a GuardedHandler for the
    runner's Server (its request handler, kwargs and shutdown), in one budget."""

    def __init__(self, runner: web.BaseRunner, budget: Budget, header_timeout: float,
                 keepalive_timeout: float) -> None:
        server = runner.server
        assert server is not None, "call runner.setup() first"
        self._server = server
        self._budget = budget
        self._kwargs: dict[str, Any] = {**server._kwargs, "keepalive_timeout": keepalive_timeout}
        self._header_timeout = header_timeout
        self._stall_timeout = keepalive_timeout

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self._server, loop=self._server._loop, budget=self._budget,
                              header_timeout=self._header_timeout,
                              stall_timeout=self._stall_timeout, **self._kwargs)


class LimitedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections are made by a HandlerFactory."""

    __slots__ = ("_factory",)

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int | None, *,
                 factory: HandlerFactory, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class LimitedUnixSite(web.UnixSite):
    """``web.UnixSite`` whose connections are made by a HandlerFactory."""

    __slots__ = ("_factory",)

    def __init__(self, runner: web.BaseRunner, path: str, *, factory: HandlerFactory,
                 **kwargs: Any) -> None:
        super().__init__(runner, path, **kwargs)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_unix_server(
            self._factory, self._path, ssl=self._ssl_context, backlog=self._backlog)


class LimitedSockSite(web.SockSite):
    """``web.SockSite`` (a socket passed by systemd) whose connections are made by a
    HandlerFactory."""

    __slots__ = ("_factory",)

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *, factory: HandlerFactory,
                 **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)


@dataclass(frozen=True)
class Limits:
    max_connections: int
    socket_max_connections: int
    header_timeout: float
    keepalive_timeout: float

    @classmethod
    def from_config(cls, config: Config, nofile: int | None = None) -> Limits:
        """The configured limits; with ``nofile`` (the soft RLIMIT_NOFILE), the TCP budget
        lowered if descriptors could not back both budgets."""
        tcp = config.max_connections
        if nofile is not None:
            room = nofile - config.socket_max_connections - FD_RESERVE
            if tcp > room:
                lowered = max(MIN_TCP_BUDGET, room)
                log.warning("http.tcp_budget_lowered", max_connections=tcp, lowered_to=lowered,
                            nofile=nofile, socket_max_connections=config.socket_max_connections,
                            hint="raise LimitNOFILE (ulimit -n) or lower max_connections")
                tcp = lowered
        return cls(tcp, config.socket_max_connections, config.header_timeout,
                   config.keepalive_timeout)


class Connections:
    """The two budgets (TCP, Unix socket) and the sites that draw on them."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.tcp = Budget("tcp", limits.max_connections)
        self.unix = Budget("unix", limits.socket_max_connections)

    def _factory(self, runner: web.BaseRunner, budget: Budget) -> HandlerFactory:
        return HandlerFactory(runner, budget, self.limits.header_timeout,
                              self.limits.keepalive_timeout)

    def tcp_site(self, runner: web.BaseRunner, host: str, port: int, **kwargs: Any) -> LimitedTCPSite:
        return LimitedTCPSite(runner, host, port, factory=self._factory(runner, self.tcp), **kwargs)

    def unix_site(self, runner: web.BaseRunner, path: str, **kwargs: Any) -> LimitedUnixSite:
        return LimitedUnixSite(runner, path, factory=self._factory(runner, self.unix), **kwargs)

    def sock_site(self, runner: web.BaseRunner, sock: socket.socket, **kwargs: Any) -> LimitedSockSite:
        """A socket passed by systemd: a Unix one draws on the socket budget, others on TCP's."""
        budget = self.unix if sock.family == socket.AF_UNIX else self.tcp
        return LimitedSockSite(runner, sock, factory=self._factory(runner, budget), **kwargs)
