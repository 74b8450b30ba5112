"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..supervisor import Supervisor
from . import compat, interact, middlewares, routes, sse, tensorlake
from .keys import CONFIG, RATE_LIMITER, SUPERVISOR
from .ratelimit import RateLimiter


def make_app(config: Config, supervisor: Supervisor) -> web.Application:
    """Build the app around a started supervisor (its lifecycle belongs to the caller)."""
    app = web.Application(
        middlewares=[middlewares.edge],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[SUPERVISOR] = supervisor
    if config.rate_limit > 0:
        app[RATE_LIMITER] = RateLimiter(config.rate_limit, config.burst)
    app.router.add_routes(routes.routes)
    app.router.add_routes(interact.routes)
    app.router.add_routes(sse.routes)
    app.router.add_routes(tensorlake.routes)
    app.router.add_routes(compat.routes)
    return app
