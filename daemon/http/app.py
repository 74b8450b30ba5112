"""The aiohttp application factory.

Every response names the daemon as ``Server: Stablehand/<version>``, never
aiohttp's default ``Python/3.x aiohttp/3.y``: the exact library versions help
nobody but someone matching them against known flaws. It is set by an
``on_response_prepare`` hook, so it covers every response the app prepares:
handlers', the edge's JSON errors, and streams (SSE, output follow, run).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from .. import __version__
from ..config import Config
from ..supervisor import Supervisor
from . import agents, compat, interact, middlewares, routes, sse, tensorlake, terminal
from .keys import CONFIG, RATE_LIMITER, SUPERVISOR
from .ratelimit import RateLimiter

MAX_REQUEST_LINE = 256 * 1024   # bytes; the edge refuses query strings past parse.MAX_QUERY_BYTES
SERVER_SOFTWARE = f"Stablehand/{__version__}"


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: ``Server: Stablehand/<version>`` in place of aiohttp's."""
    response.headers[hdrs.SERVER] = SERVER_SOFTWARE


def make_app(config: Config, supervisor: Supervisor | None = None) -> web.Application:
    """Build the app around a started supervisor (its lifecycle belongs to the caller), or,
    without one, for ``lifecycle.make_daemon_app``, which opens the daemon's core when the
    app starts and puts its supervisor under SUPERVISOR."""
    app = web.Application(
        middlewares=[middlewares.edge],
        client_max_size=config.max_body_bytes,
        # aiohttp refuses a request line past 8190 bytes itself, in text/plain, before any
        # middleware: let lines up to MAX_REQUEST_LINE through so the edge answers a long
        # query string with its JSON 414 (AppRunner passes handler_args to every connection).
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app.on_response_prepare.append(middlewares.cors_on_prepare)
    app.on_response_prepare.append(name_the_server)
    app[CONFIG] = config
    if supervisor is not None:
        app[SUPERVISOR] = supervisor
    if config.rate_limit > 0:
        app[RATE_LIMITER] = RateLimiter(config.rate_limit, config.burst)
    app.router.add_routes(routes.routes)
    app.router.add_routes(interact.routes)
    app.router.add_routes(agents.routes)
    app.router.add_routes(terminal.routes)
    app.router.add_routes(sse.routes)
    app.router.add_routes(tensorlake.routes)
    app.router.add_routes(compat.routes)
    return app
