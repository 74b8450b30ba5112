"""Typed application state keys (aiohttp's AppKey), shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..supervisor import Supervisor
from .ratelimit import RateLimiter

CONFIG = web.AppKey("config", Config)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
