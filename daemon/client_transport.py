"""How :mod:`daemon.client` reaches a daemon: where, with which token, and what failing looks like.

Kept apart from the calls themselves (:class:`daemon.client.Client` and
``AsyncClient``) because both clients share it, and so does the CLI through
their re-exports: the errors (:class:`ApiError`, :class:`ConnectionFailed`,
:class:`StreamBroken`) with :data:`START_HINT`, the default target
(:func:`default_target`), the token (:func:`find_token`) and the HTTP
connection over a Unix socket (:class:`UnixConnection`), and the paths and
bodies both clients send (:func:`segment`, :func:`start_body`, :func:`poll_body`,
:func:`stop_many_body`: snake_case options become the API's camelCase). Standard library
only, like the synchronous client: importing it loads neither aiohttp, nor the
output store, nor structlog.

The target: ``$STABLEHAND_URL``, else ``$STABLEHAND_SOCKET``, else the daemon's
default socket if it exists, else TCP on ``127.0.0.1:9371``. The URL wins over
the socket when both variables are set, as an explicit ``url`` would.

The token: TCP needs one by default. Unless ``token`` is given, a client looks
for it as :func:`daemon.tokens.find` says: ``token_file`` (``"none"``: no token),
``$STABLEHAND_TOKEN_FILE``, ``$STABLEHAND_TOKEN``, and, for a loopback URL only,
the daemon's own ``<state dir>/token`` if this user can read it. Over the Unix
socket only an explicitly given token is sent (the socket needs none by default).
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import tokens
from .config import DEFAULT_PORT, default_socket, default_state_dir

__all__ = ["START_HINT", "ApiError", "ConnectionFailed", "StreamBroken", "UnixConnection",
           "default_target", "find_token"]

START_HINT = "start the daemon with `stablehand serve` (or `systemctl start stablehand`)"


class ApiError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class ConnectionFailed(Exception):
    """Nothing answered at the socket or URL that was tried."""


class StreamBroken(ConnectionFailed):
    """A streamed answer (output, events) ended before its end: the daemon went away."""


def default_target() -> tuple[Path | None, str | None]:
    """(socket path, base URL) a client uses when given neither: $STABLEHAND_SOCKET /
    $STABLEHAND_URL, else the daemon's default socket if it exists, else TCP on 9371."""
    if os.environ.get("STABLEHAND_URL"):
        return None, os.environ["STABLEHAND_URL"].rstrip("/")
    if os.environ.get("STABLEHAND_SOCKET"):
        return Path(os.environ["STABLEHAND_SOCKET"]), None
    path = default_socket(os.environ, default_state_dir(os.environ))
    if path.exists():
        return path, None
    return None, f"http://127.0.0.1:{DEFAULT_PORT}"


def find_token(socket_path: Path | None, url: str | None, token: str | None,
               token_file: str | os.PathLike[str] | None) -> str | None:
    """The token to send: ``token`` if given, else what :func:`daemon.tokens.find` finds
    (for the Unix socket without a URL, so the daemon's own token file is never read)."""
    if token is not None:
        return token
    return tokens.find(None if socket_path is not None else url, token_file)


class UnixConnection(http.client.HTTPConnection):
    """An ``http.client`` connection whose socket is the daemon's Unix socket."""

    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


# --- paths and bodies, the same for both clients ---------------------------------------

def segment(process_id: int | str) -> str:
    """An id, or a name (never all digits), as one path segment."""
    return urllib.parse.quote(str(process_id), safe="")


def camel(value: Any) -> Any:
    """A restart / health check / ready object with snake_case keys (Tensorlake's, the
    services file's) in the native API's camelCase; camelCase keys pass unchanged."""
    if not isinstance(value, dict):
        return value
    return {key.split("_")[0] + "".join(part.title() for part in key.split("_")[1:]): item
            for key, item in value.items()}


# Start options a Python caller may spell in snake_case (issue 20's poll and environment).
_OPTION_NAMES = {"yield_ms": "yieldMs", "max_bytes": "maxBytes", "plain_env": "plainEnv"}


def poll_body(yield_ms: int | None, max_bytes: int | None, input: str | None,
               consumer: str | None) -> dict[str, Any]:
    values = {"yieldMs": yield_ms, "maxBytes": max_bytes, "input": input, "consumer": consumer}
    return {k: v for k, v in values.items() if v is not None}


def start_body(argv: Sequence[str] | None, command: str | None, name: str | None,
                restart: dict[str, Any] | None, health_check: dict[str, Any] | None,
                ready: dict[str, Any] | None, options: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"argv": list(argv)} if argv is not None else {"command": command}
    body.update({_OPTION_NAMES.get(k, k): v for k, v in options.items() if v is not None})
    managed = {"name": name, "restart": camel(restart), "healthCheck": camel(health_check),
               "ready": camel(ready)}
    body.update({k: v for k, v in managed.items() if v is not None})
    return body


# How long a bulk stop may take at most: the API's largest grace; the daemon answers within
# that + its SIGKILL wait, so the clients wait that long + a margin for the answer.
MAX_GRACE = 86400.0


def stop_many_body(ids: Sequence[int] | None, ref: str | None, state: str | None,
                   grace: float | None) -> dict[str, Any]:
    """The body of ``POST /processes/stop``: the one selector given (the daemon answers 400
    unless exactly one is), and ``grace`` if given."""
    values = {"ids": None if ids is None else list(ids), "ref": ref, "state": state, "grace": grace}
    return {k: v for k, v in values.items() if v is not None}
