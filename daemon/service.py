"""``stablehand serve``: bring the daemon up in a safe order and take it down cleanly.

Start-up order (READY=1 only at the end):
  1. check the state dir (0700, ours; see :mod:`daemon.statedir`), lock it and the
     socket path (a second daemon refuses to start, before it binds or opens
     anything the first one uses), then create or read the default token;
  2. raise RLIMIT_NOFILE; set up the app, which opens the daemon's core
     (:mod:`daemon.lifecycle`: the registry, created 0600 first, migrated; the
     supervisor, started: the registry reconciled with the machine, queued started);
  3. listen: sockets passed by systemd, else TCP and the Unix socket;
  4. sd_notify READY=1 and start the watchdog pings;
  5. with ``--services FILE`` (read and checked before step 1: a bad file is exit 78),
     apply it in the background through the daemon's own socket (services_apply.py).

SIGTERM/SIGINT: STOPPING=1, then the runner's cleanup (lifecycle.py): close the
listeners, stop or detach children (``shutdown`` setting), give open requests
``shutdown_timeout``, close the registry; exit 0.

The socket path: a regular file (or anything but a socket) there stops start-up
with a message naming it; a stale socket is replaced (we hold its lock, so no
live daemon serves it). Once bound, the socket's device and inode are recorded,
and on the daemon's own exit the path is removed only if it is still that very
socket. A start that fails removes nothing it did not create.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import grp
import ipaddress
import os
import signal
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from . import oskit, statedir, systemd, tokens
from .config import Config, ConfigError
from .http import connections
from .http.keys import SUPERVISOR
from .http.middlewares import AccessLogger
from .lifecycle import StartupError, make_daemon_app
from .supervisor import Supervisor

if TYPE_CHECKING:
    from . import services_apply

__all__ = ["StartupError", "serve"]

log = structlog.get_logger("stablehand.service")


def _lock(path: Path, what: str) -> int:
    """Lock ``path`` (see :func:`statedir.lock`); the returned fd holds the lock."""
    try:
        return statedir.lock(path)
    except statedir.LockHeld as exc:
        raise StartupError(f"another Stablehand (pid {exc.holder}) is already using {what}; "
                           "stop it first or choose another") from None
    except statedir.StateDirError as exc:
        raise StartupError(str(exc)) from None


def _load_token(config: Config) -> Config:
    """Fill in the default token: create ``<state dir>/token`` on the first start, read it
    on later ones (0600 and ours, else exit 78 like an explicit --token-file)."""
    if not config.token_pending:
        return config
    assert config.token_file is not None
    try:
        token, created = tokens.ensure(config.token_file)
    except tokens.TokenFileError as exc:
        raise ConfigError("token_file", str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot create token file {config.token_file}: {exc.strerror}") from None
    if created:  # the path only: the value is a secret
        log.info("token.created", path=str(config.token_file),
                 hint="`stablehand token` prints it; clients on this machine find it by themselves")
    return dataclasses.replace(config, token=token)


def _check_passed_sockets(config: Config, sd: systemd.SystemdEnv) -> None:
    """With tokens off, a TCP socket passed by systemd must be loopback too, as --listen must."""
    if config.token is not None:
        return
    for fd, name in sd.listen_fds:
        sock = socket.socket(fileno=fd)
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            host = sock.getsockname()[0]
        finally:
            sock.detach()
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConfigError("token_file", f"'none' (no token) is allowed only on loopback, and "
                                            f"systemd passed {name} bound to {host}")


class _SocketPath:
    """The Unix socket path: refuse what is not a socket, and remove only what we bound."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._bound: tuple[int, int] | None = None
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StartupError(f"cannot use socket path {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(info.st_mode):
            raise StartupError(f"{path} exists and is not a socket; it was left untouched. "
                               "Move it away or choose another --socket")

    def bound(self) -> None:
        """Record the socket just bound at the path (its device and inode)."""
        info = self.path.lstat()
        self._bound = (info.st_dev, info.st_ino)

    def remove(self) -> None:
        """On our own exit: unlink the path only if it is still the socket we bound."""
        if self._bound is None:
            return
        try:
            info = self.path.lstat()
        except OSError:
            return
        if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == self._bound:
            self.path.unlink(missing_ok=True)
        else:
            log.warning("socket.replaced", path=str(self.path),
                        detail="the socket path no longer holds our socket; left as it is")


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


async def serve(config: Config, sd: systemd.SystemdEnv) -> int:
    declared = None
    if config.services:
        # Imported here: it brings the HTTP client and the services file's parser (tomllib),
        # which a daemon started without --services never needs (memory, issue 21).
        from . import services_apply
        declared = services_apply.load_for_serve(config.services)
    # 0700: the registry keeps each caller's env (often secrets) and the output files.
    try:
        statedir.prepare_dir(config.state_dir)
    except statedir.StateDirError as exc:
        raise StartupError(str(exc)) from None
    locks = [_lock(config.lock_path, f"state dir {config.state_dir}")]
    socket_path: _SocketPath | None = None
    try:
        if config.socket is not None and not sd.listen_fds:
            _prepare_socket_dir(config.socket)
            locks.append(_lock(config.socket.with_name(config.socket.name + ".lock"),
                               f"socket {config.socket}"))
            socket_path = _SocketPath(config.socket)  # checked while we hold its lock
        config = _load_token(config)
        _check_passed_sockets(config, sd)
    except BaseException:
        for fd in locks:
            os.close(fd)
        raise
    notifier = systemd.Notifier(sd.notify_socket)
    nofile = oskit.raise_nofile_limit()
    app = make_daemon_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger,
                           shutdown_timeout=2.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchdog: asyncio.Task[None] | None = None
    applying: services_apply.AtStartup | None = None
    try:
        await runner.setup()  # opens the core: StartupError, RegistryError...
        supervisor = app[SUPERVISOR]
        addresses = await _start_sites(runner, config, sd, nofile)
        if socket_path is not None:
            socket_path.bound()
        # What start-up made (modules, the app, the OpenAPI document) lives as long as the
        # daemon: freeze it out of the collector, so a collection costs what live data costs.
        gc.collect()
        gc.freeze()
        notifier.notify("READY=1", _status(supervisor))
        log.info("daemon.ready", pid=os.getpid(), listen=addresses, state_dir=str(config.state_dir),
                 token_file=str(config.token_file) if config.token_file else None,
                 nofile=nofile, systemd=notifier.enabled)
        if sd.watchdog_interval:
            watchdog = asyncio.create_task(_watchdog(notifier, supervisor, sd.watchdog_interval))
        if config.services is not None and declared is not None:
            applying = services_apply.AtStartup(config.services, declared,
                                                services_apply.own_target(config, sd))
            applying.begin()
        await stop.wait()
        log.info("daemon.stopping", shutdown=config.shutdown)
        notifier.notify("STOPPING=1", "STATUS=stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if applying is not None:
            applying.stop.set()
        await runner.cleanup()  # listeners, then children, open requests, registry (lifecycle.py)
        if applying is not None:
            await applying.finish()
        if socket_path is not None:
            socket_path.remove()
        for fd in locks:
            os.close(fd)
        notifier.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("daemon.stopped")
    return 0


async def _start_sites(runner: web.AppRunner, config: Config, sd: systemd.SystemdEnv,
                       nofile: int | None = None) -> list[str]:
    # Header deadline, keep-alive timeout and a connection budget per kind of listener.
    limited = connections.Connections(connections.Limits.from_config(config, nofile))
    addresses = []
    if sd.listen_fds:  # socket activation: serve exactly what systemd passed
        for fd, name in sd.listen_fds:
            sock = systemd.socket_from_fd(fd)
            await limited.sock_site(runner, sock).start()
            addresses.append(f"fd:{fd}({name})")
        return addresses
    if config.listen is not None:
        site = limited.tcp_site(runner, config.listen.host, config.listen.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.listen}: {exc.strerror}") from None
        addresses.append(str(config.listen))
    if config.socket is not None:
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            await limited.unix_site(runner, str(config.socket)).start()
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

