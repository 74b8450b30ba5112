"""Typed application state keys (aiohttp's AppKey), shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..supervisor import Supervisor

CONFIG = web.AppKey("config", Config)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
