"""Typed application state keys (aiohttp's AppKey), shared by the HTTP modules, and the
one accessor handlers use to reach the supervisor."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..supervisor import Supervisor
from .ratelimit import RateLimiter

CONFIG = web.AppKey("config", Config)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def supervisor_of(request: web.Request) -> Supervisor:
    """The supervisor behind this request's app: everything a handler asks of the daemon."""
    return request.app[SUPERVISOR]
