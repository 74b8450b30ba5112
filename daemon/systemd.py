"""systemd's protocols, spoken natively (no libsystemd).

* sd_notify: one datagram per message to ``$NOTIFY_SOCKET`` (a path, or
  ``@name`` for the abstract namespace): READY=1, STATUS=..., WATCHDOG=1,
  STOPPING=1.
* Socket activation: ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``; the
  passed sockets start at fd 3.

The variables are read once at start-up and removed from the daemon's own
environment, so no child can inherit them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3
_VARS = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC",
         "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages; a no-op when not run by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> None:
        if self._sock is None or self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto("\n".join(lines).encode(), target)
        except OSError:
            pass  # systemd gone or socket unreachable: notifications are best effort

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SystemdEnv:
    """What systemd told this process through its environment (captured once)."""

    def __init__(self, notify_socket: str | None, watchdog_usec: int | None,
                 listen_fds: list[tuple[int, str]]) -> None:
        self.notify_socket = notify_socket
        self.watchdog_usec = watchdog_usec
        self.listen_fds = listen_fds

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec=."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None


def take_environment(env: MutableMapping[str, str] | None = None) -> SystemdEnv:
    """Read and remove systemd's variables from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    values = {name: env.pop(name, None) for name in _VARS}
    pid = os.getpid()
    watchdog_usec = None
    if values["WATCHDOG_USEC"] and values["WATCHDOG_PID"] in (None, str(pid)):
        try:
            watchdog_usec = int(values["WATCHDOG_USEC"])
        except ValueError:
            watchdog_usec = None
    listen_fds: list[tuple[int, str]] = []
    if values["LISTEN_PID"] == str(pid) and values["LISTEN_FDS"]:
        try:
            count = int(values["LISTEN_FDS"])
        except ValueError:
            count = 0
        names = (values["LISTEN_FDNAMES"] or "").split(":") if values["LISTEN_FDNAMES"] else []
        for index in range(count):
            fd = SD_LISTEN_FDS_START + index
            os.set_inheritable(fd, False)
            listen_fds.append((fd, names[index] if index < len(names) else "unknown"))
    return SystemdEnv(values["NOTIFY_SOCKET"], watchdog_usec, listen_fds)


def socket_from_fd(fd: int) -> socket.socket:
    """Wrap an inherited listening socket (its family is read from the fd)."""
    return socket.socket(fileno=fd)
