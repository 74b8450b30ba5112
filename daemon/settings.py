"""Every setting's parser, declared once: a raw value in, a typed value out.

A raw value is a string when it comes from a flag or the environment
(``STABLEHAND_*``), and a native value (int, bool, list...) when it comes from
the TOML file; each parser takes both, so a flag, an environment variable and a
TOML key can never disagree on what a value means. A parser raises ValueError
saying what is wrong with the value; :func:`daemon.config.load` turns that into
a ConfigError naming the flag, variable or key it came from. This module knows
nothing of sources and precedence (that is :mod:`daemon.config`) and imports
nothing of Stablehand's, so the arrow between the two points one way.

A new setting is a field on :class:`daemon.config.Config` and a line in
:data:`SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Listen:
    """A TCP address to listen on (``listen = "HOST:PORT"``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# --- value parsers: raw value (str from flags/env, native from TOML) -> typed ---

def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def _path(raw: Any) -> Path:
    text = _text(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    return Path(text).expanduser()


def _optional_path(raw: Any) -> Path | None:
    text = _text(raw).strip()
    if text.lower() in ("none", "off", ""):
        return None
    path = Path(text).expanduser()
    if len(os.fsencode(str(path.absolute()))) >= 108:
        raise ValueError("a Unix socket path must be shorter than 108 bytes")
    return path


NO_TOKEN = "none"


def _token_file(raw: Any) -> Path | str:
    """A token file path, or NO_TOKEN for 'none'/'off' (tokens turned off on purpose)."""
    text = _text(raw).strip()
    if text.lower() in ("none", "off"):
        return NO_TOKEN
    if not text:
        raise ValueError("must be a file path, or 'none' for no token (loopback only)")
    return Path(text).expanduser()


def _optional_file(raw: Any) -> Path | None:
    text = _text(raw).strip()
    return None if text.lower() in ("none", "off", "") else Path(text).expanduser()


def _listen(raw: Any) -> Listen | None:
    text = _text(raw).strip()
    if text.lower() in ("none", "off", ""):
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (or 'none')")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return Listen(host, port)


def _non_negative_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{raw!r} is not an integer") from None
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_int(raw: Any) -> int:
    value = _non_negative_int(raw)
    if value == 0:
        raise ValueError("must be 1 or more")
    return value


def _seconds(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("must be a number of seconds")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not (0 <= value <= 86400 * 7):
        raise ValueError("must be between 0 and 604800 seconds")
    return value


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false)")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = _text(raw).strip().lower()
        if text not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return text
    return parse


def _optional_text(raw: Any) -> str | None:
    text = _text(raw).strip()
    return text or None


def _string_list(raw: Any) -> tuple[str, ...]:
    """A TOML array of strings, or a comma-separated string (flags, environment)."""
    items = raw if isinstance(raw, list) else _text(raw).split(",")
    values = []
    for item in items:
        text = _text(item).strip()
        if text:
            values.append(text)
    return tuple(values)


def _uid_list(raw: Any) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else _text(raw).split(",")
    return tuple(_non_negative_int(item) for item in items if str(item).strip())


def _rate(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("must be a number of requests per second")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{raw!r} is not a number of requests per second") from None
    if not 0 <= value <= 1_000_000:
        raise ValueError("must be between 0 (off) and 1000000")
    return value


SETTINGS: dict[str, Callable[[Any], Any]] = {
    "state_dir": _path,
    "listen": _listen,
    "socket": _optional_path,
    "max_concurrent": _non_negative_int,
    "grace": _seconds,
    "token_file": _token_file,
    "shutdown": _choice("stop", "detach"),
    "keeper": _choice("auto", "external"),
    "allow_unmanaged": _bool,
    "max_body_bytes": _positive_int,
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "socket_requires_token": _bool,
    "socket_group": _optional_text,
    "socket_allowed_uids": _uid_list,
    "rate_limit": _rate,
    "rate_burst": _non_negative_int,
    "allowed_programs": _string_list,
    "max_output_bytes": _positive_int,
    "event_loop": _choice("uvloop", "asyncio"),
    "allowed_origins": _string_list,
    "allowed_hosts": _string_list,
    "max_connections": _positive_int,
    "socket_max_connections": _positive_int,
    "header_timeout": _seconds,
    "keepalive_timeout": _seconds,
    "services": _optional_file,
}
