"""The aiohttp application factory."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..supervisor import Supervisor
from . import compat, middlewares, routes
from .keys import CONFIG, SUPERVISOR


def make_app(config: Config, supervisor: Supervisor) -> web.Application:
    """Build the app around a started supervisor (its lifecycle belongs to the caller)."""
    app = web.Application(
        middlewares=[middlewares.errors],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[SUPERVISOR] = supervisor
    app.router.add_routes(routes.routes)
    app.router.add_routes(compat.routes)
    return app
