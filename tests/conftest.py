"""Fixtures: an in-process daemon behind aiohttp's test client, and the leak checks.

Every test must leave no child process and no open fd behind; the autouse
fixture below waits (with a deadline) for both to return to where they were.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.config import Config
from daemon.lifecycle import CORE, make_daemon_app


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _live_descendants() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Any:
    before_children = {p.pid for p in _live_descendants()}
    before_fds = _open_fds()
    yield
    deadline = time.monotonic() + 15
    while True:
        extra_children = [p for p in _live_descendants() if p.pid not in before_children]
        extra_fds = _open_fds() - before_fds
        if not extra_children and not extra_fds:
            return
        if time.monotonic() > deadline:
            for proc in extra_children:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            details = {fd: _describe_fd(fd) for fd in extra_fds}
            raise AssertionError(f"test left children {[(p.pid, p.cmdline()) for p in extra_children]}"
                                 f" and fds {details}")
        time.sleep(0.02)


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def make_config(state_dir: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {"grace": 2.0}
    values.update(overrides)
    return Config(state_dir=state_dir, listen=None, socket=None, **values)


DaemonFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_daemon(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[DaemonFactory]:
    """Start an in-process daemon: ``client = await make_daemon(max_concurrent=2)``.

    The returned aiohttp test client has ``.supervisor``, ``.registry`` and ``.config``.
    The daemon's app is the one ``stablehand serve`` runs (daemon/lifecycle.py): its core
    opens as the test server starts and shuts down as aiohttp_client closes it.
    """
    async def factory(state_dir: Path | None = None, **overrides: Any) -> Any:
        config = make_config(state_dir or tmp_path / "state", **overrides)
        app = make_daemon_app(config)
        client = await aiohttp_client(app)
        core = app[CORE]
        client.supervisor, client.registry, client.config = core.supervisor, core.registry, config
        return client

    yield factory


@pytest.fixture
async def client(make_daemon: DaemonFactory) -> Any:
    return await make_daemon()
