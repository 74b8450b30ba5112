"""The daemon's core, opened and closed in one place: the registry, the output store and
the supervisor. ``service.serve`` and the in-process tests both use :func:`make_daemon_app`.

Start-up, in order: check the state dir and the registry's files (see
:mod:`daemon.statedir`), open the registry (migrations, the schema check), make the
output store, start the supervisor (reconcile the registry with the machine, start
what is queued). Shutdown, in reverse: the supervisor (its children stopped or
detached per the ``shutdown`` setting; the output store closed), then the registry
(what is queued is committed).

:func:`running` is that as an async context manager. :func:`make_daemon_app` ties it
to an aiohttp app's lifetime: the core opens when the app starts (``runner.setup()``,
or a test client starting its server) and, at ``runner.cleanup()``, aiohttp stops
the listeners, then runs ``on_shutdown`` (here: the supervisor's shutdown, so that
streams following a process and runs end with their process, as clients expect),
then gives open requests their ``shutdown_timeout``, then leaves the cleanup
context (here: the registry closes last, after every handler is done with it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from . import statedir
from .config import Config
from .errors import StablehandError
from .http.app import make_app
from .http.keys import CONFIG, SUPERVISOR
from .output import OutputStore
from .registry import Registry
from .supervisor import Supervisor


class StartupError(StablehandError):
    """The daemon cannot start; the message says why and what to do."""


class Core:
    """The registry and the supervisor of one daemon, for as long as it runs."""

    def __init__(self, registry: Registry, supervisor: Supervisor) -> None:
        self.registry = registry
        self.supervisor = supervisor
        self._shutdown: asyncio.Future[None] | None = None

    async def shut_down(self) -> None:
        """Shut the supervisor down; the first call does it, later ones wait for that one."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self.supervisor.shutdown())
        await asyncio.shield(self._shutdown)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Core]:
    """The core, open and started; shut down and closed on the way out (see module doc)."""
    try:
        statedir.prepare_dir(config.state_dir)        # 0700: the registry keeps callers' env
        statedir.prepare_registry(config.database_path)
        statedir.prepare_subdir(config.output_dir, "output dir")
    except statedir.StateDirError as exc:
        raise StartupError(str(exc)) from None
    registry = await Registry.open(config.database_path)
    try:
        core = Core(registry, Supervisor(config, registry,
                                         OutputStore(config.output_dir)))
        await core.supervisor.start()
        try:
            yield core
        finally:
            await core.shut_down()
    finally:
        await registry.close()


CORE = web.AppKey("core", Core)


def make_daemon_app(config: Config) -> web.Application:
    """The daemon's app, owning its core for its lifetime (see the module docstring).

    Once the app has started, ``app[CORE]`` is the core and the handlers find the
    supervisor under their usual key.
    """
    app = make_app(config)
    app.cleanup_ctx.append(_core_context)
    app.on_shutdown.append(_shut_down)
    return app


async def _core_context(app: web.Application) -> AsyncIterator[None]:
    async with running(app[CONFIG]) as core:
        app[CORE] = core
        app[SUPERVISOR] = core.supervisor
        yield


async def _shut_down(app: web.Application) -> None:
    if CORE in app:  # absent if start-up failed
        await app[CORE].shut_down()
