"""``stablehand serve``: bring the daemon up in a safe order and take it down cleanly.

Start-up order (READY=1 only at the end):
  1. lock the state dir and the socket path (a second daemon refuses to start,
     before it binds or opens anything the first one uses);
  2. raise RLIMIT_NOFILE; open the registry (migrations);
  3. start the supervisor (reconcile the registry with the machine, start queued);
  4. listen: sockets passed by systemd, else TCP and the Unix socket;
  5. sd_notify READY=1 and start the watchdog pings.

SIGTERM/SIGINT: STOPPING=1, stop or detach children (``shutdown`` setting),
close listeners, close the registry, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import signal
from pathlib import Path
from typing import IO

import structlog
from aiohttp import web

from . import oskit, systemd
from .config import Config
from .http.app import make_app
from .http.middlewares import AccessLogger
from .output import OutputStore
from .registry import Registry
from .supervisor import Supervisor

log = structlog.get_logger("stablehand.service")


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def _lock(path: Path, what: str) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(f"another Stablehand (pid {holder}) is already using {what}; "
                           "stop it first or choose another") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _prepare_socket_dir(path: Path) -> None:
    """The socket's directory must be writable by the daemon's user alone.

    Otherwise another user could replace the socket between two starts and
    receive the requests (and the token) meant for the daemon.
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    info = directory.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise StartupError(
            f"socket directory {directory} must be owned by uid {os.geteuid()} and writable by "
            "it alone (e.g. chmod 700); choose another --socket path")


async def open_core(config: Config) -> tuple[Registry, Supervisor]:
    """Open the registry and start the supervisor (also used by in-process tests)."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    registry = await Registry.open(config.database_path)
    supervisor = Supervisor(config, registry, OutputStore(config.output_dir, config.spare_outputs))
    try:
        await supervisor.start()
    except BaseException:
        await registry.close()
        raise
    return registry, supervisor


async def serve(config: Config, sd: systemd.SystemdEnv) -> int:
    # 0700: the registry keeps each caller's env (often secrets) and the output files.
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    locks = [_lock(config.lock_path, f"state dir {config.state_dir}")]
    if config.socket is not None and not sd.listen_fds:
        _prepare_socket_dir(config.socket)
        locks.append(_lock(config.socket.with_name(config.socket.name + ".lock"),
                           f"socket {config.socket}"))
    notifier = systemd.Notifier(sd.notify_socket)
    nofile = oskit.raise_nofile_limit()
    registry, supervisor = await open_core(config)
    runner = web.AppRunner(make_app(config, supervisor), handle_signals=False,
                           access_log_class=AccessLogger, shutdown_timeout=2.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchdog: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        addresses = await _start_sites(runner, config, sd)
        notifier.notify("READY=1", _status(supervisor))
        log.info("daemon.ready", pid=os.getpid(), listen=addresses, state_dir=str(config.state_dir),
                 nofile=nofile, systemd=notifier.enabled)
        if sd.watchdog_interval:
            watchdog = asyncio.create_task(_watchdog(notifier, supervisor, sd.watchdog_interval))
        await stop.wait()
        log.info("daemon.stopping", shutdown=config.shutdown)
        notifier.notify("STOPPING=1", "STATUS=stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await supervisor.shutdown()
        await runner.cleanup()
        await registry.close()
        if config.socket is not None and not sd.listen_fds:
            with contextlib.suppress(FileNotFoundError):
                config.socket.unlink()
        for handle in locks:
            handle.close()
        notifier.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("daemon.stopped")
    return 0


async def _start_sites(runner: web.AppRunner, config: Config, sd: systemd.SystemdEnv) -> list[str]:
    addresses = []
    if sd.listen_fds:  # socket activation: serve exactly what systemd passed
        for fd, name in sd.listen_fds:
            sock = systemd.socket_from_fd(fd)
            await web.SockSite(runner, sock).start()
            addresses.append(f"fd:{fd}({name})")
        return addresses
    if config.listen is not None:
        site = web.TCPSite(runner, config.listen.host, config.listen.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.listen}: {exc.strerror}") from None
        addresses.append(str(config.listen))
    if config.socket is not None:
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            await web.UnixSite(runner, str(config.socket)).start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.socket}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        if config.socket_group is not None:
            os.chown(config.socket, -1, grp.getgrnam(config.socket_group).gr_gid)
            os.chmod(config.socket, 0o660)
        else:
            os.chmod(config.socket, 0o600)
        addresses.append(f"unix:{config.socket}")
    return addresses


def _status(supervisor: Supervisor) -> str:
    counts = supervisor.counts()
    return "STATUS=" + ", ".join(f"{n} {state}" for state, n in counts.items())


async def _watchdog(notifier: systemd.Notifier, supervisor: Supervisor, interval: float) -> None:
    """Ping from the event loop itself, so a blocked loop stops the pings."""
    while True:
        notifier.notify("WATCHDOG=1", _status(supervisor))
        await asyncio.sleep(interval)

