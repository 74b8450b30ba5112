"""One frozen Config, built from flags > environment (STABLEHAND_*) > TOML file > defaults.

Every setting is declared once in ``SETTINGS`` with its parser (both in
:mod:`daemon.settings`, re-exported here), so a flag, an environment variable and
a TOML key can never disagree on what a value means. This module picks which
source a value comes from and checks the settings against each other. A bad
value raises :class:`ConfigError` naming the key; the CLI turns that into
exit code 78 (EX_CONFIG). Nothing ever falls back to a default silently.

Defaults make ``stablehand serve`` work out of the box:

* state dir: ``$STATE_DIRECTORY`` (set by systemd's StateDirectory=), else
  ``/var/lib/stablehand`` as root, else ``$XDG_STATE_HOME/stablehand``
  (``~/.local/state/stablehand``);
* socket: ``$RUNTIME_DIRECTORY/stablehand.sock`` under systemd, else
  ``/run/stablehand/stablehand.sock`` as root, else
  ``$XDG_RUNTIME_DIR/stablehand/stablehand.sock``, else ``<state dir>/stablehand.sock``;
* TCP: 127.0.0.1:9371 (Cyrnel's port);
* token: with no ``token_file``, ``<state dir>/token``, created by the daemon's
  first start (see :mod:`daemon.tokens`). ``load`` stays free of side effects: it
  reads an explicit token file, but the default one is created or read by
  ``service.serve`` once the state dir is checked and locked, and it fills in
  ``Config.token`` before the app is built. ``token_file = "none"`` turns tokens
  off, on a loopback listener only; ``Config.token`` is then None.
"""

from __future__ import annotations

import dataclasses
import grp
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StablehandError
from .settings import NO_TOKEN, SETTINGS, Listen
from .tokens import FILE_NAME as TOKEN_FILE_NAME
from .tokens import TokenFileError, read_private

EX_CONFIG = 78
DEFAULT_PORT = 9371
ENV_PREFIX = "STABLEHAND_"
# Settings an older version had: accepted in a file and ignored, so an upgrade never
# fails on a config that was valid (docs/configuration.md says what replaced each).
RETIRED = frozenset({"spare_outputs"})   # output files are made by the keeper now

__all__ = ["DEFAULT_PORT", "ENV_PREFIX", "EX_CONFIG", "NO_TOKEN", "RETIRED", "SETTINGS",
           "Config", "ConfigError", "Listen", "default_socket", "default_state_dir", "load"]


class ConfigError(StablehandError):
    """A setting has a value Stablehand cannot use. ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"invalid setting {key!r}: {message}")
        self.key = key


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    listen: Listen | None
    socket: Path | None
    max_concurrent: int = 0          # 0 = no limit
    grace: float = 10.0
    # The token's file: explicit, or <state dir>/token by default; None when tokens are off.
    # ``token`` is None either when they are off, or (only between config.load and
    # service.serve) while the default file is still to be created or read: see
    # ``token_pending``.
    token_file: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    shutdown: str = "stop"           # stop | detach
    keeper: str = "auto"             # auto: start one when none answers | external: systemd runs it
    allow_unmanaged: bool = False
    max_body_bytes: int = 1024 * 1024
    log_format: str = "auto"         # auto | json | console
    log_level: str = "info"
    socket_requires_token: bool = False
    socket_group: str | None = None  # socket becomes 0660 with this group
    socket_allowed_uids: tuple[int, ...] = ()   # empty: any uid that can open the socket
    rate_limit: float = 0.0          # requests per second per client on mutating routes; 0 = off
    rate_burst: int = 0              # bucket size; 0 = max(1, rate_limit)
    allowed_programs: tuple[str, ...] = ()      # empty: any program
    max_output_bytes: int = 64 * 1024 * 1024    # per stream; the oldest bytes are dropped past it
    event_loop: str = "uvloop"       # uvloop | asyncio
    # Browsers and DNS rebinding (see docs/security.md): Origins that may call the API
    # (none by default), and Hosts accepted besides loopback names when no token is in force.
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    # Connections: TCP and the Unix socket each have their own budget, so no number of
    # TCP connections can keep a socket client out.
    max_connections: int = 1024         # concurrent TCP connections
    socket_max_connections: int = 256   # concurrent Unix-socket connections
    header_timeout: float = 10.0        # seconds to send a request line and headers
    keepalive_timeout: float = 75.0     # seconds an idle keep-alive connection is kept
    services: Path | None = None        # a services file applied at start-up (daemon/services.py)

    @property
    def burst(self) -> int:
        return self.rate_burst or max(1, int(self.rate_limit + 0.999))

    @property
    def database_path(self) -> Path:
        return self.state_dir / "stablehand.db"

    @property
    def output_dir(self) -> Path:
        return self.state_dir / "output"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "stablehand.lock"

    @property
    def token_pending(self) -> bool:
        """A token file is set but not read yet: the default one, which serve makes or reads."""
        return self.token_file is not None and self.token is None


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/stablehand")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stablehand"


def default_socket(env: Mapping[str, str], state_dir: Path) -> Path:
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "stablehand.sock"
    if os.geteuid() == 0:
        return Path("/run/stablehand/stablehand.sock")
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "stablehand" / "stablehand.sock"
    return state_dir / "stablehand.sock"


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the Config. ``flags`` holds only the options given on the command line."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    file_values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        file_values = _read_toml(Path(config_file))

    values: dict[str, Any] = {}
    for key, parse in SETTINGS.items():
        for source, raw in (
            ("flag", flags.get(key)),
            ("env", env.get(ENV_PREFIX + key.upper())),
            ("file", file_values.get(key)),
        ):
            if raw is None:
                continue
            try:
                values[key] = parse(raw)
            except ValueError as exc:
                name = {"flag": f"--{key.replace('_', '-')}", "env": ENV_PREFIX + key.upper(),
                        "file": key}[source]
                raise ConfigError(name, str(exc)) from None
            break

    state_dir = values.pop("state_dir", None) or default_state_dir(env)
    listen = values.pop("listen") if "listen" in values else Listen("127.0.0.1", DEFAULT_PORT)
    socket = values.pop("socket") if "socket" in values else default_socket(env, state_dir)
    state_dir = state_dir.absolute()
    token_file = values.pop("token_file", None)
    token: str | None = None
    if token_file == NO_TOKEN:
        token_file = None
        if listen is not None and not listen.is_loopback:
            raise ConfigError(
                "token_file",
                f"'none' (no token) is allowed only on a loopback listener, and {listen} is not "
                "one: anyone on the network could run programs here. Drop --token-file none "
                "(the daemon then makes a token), or listen on 127.0.0.1")
    elif token_file is None:
        token_file = state_dir / TOKEN_FILE_NAME   # made or read by service.serve
    else:
        token = _read_token(token_file.absolute())
    if values.get("socket_group") is not None:
        try:
            grp.getgrnam(values["socket_group"])
        except KeyError:
            raise ConfigError("socket_group", f"no group named {values['socket_group']!r}") from None
    if values.get("socket_requires_token") and token_file is None:
        raise ConfigError("socket_requires_token", "needs a token, and token_file is 'none'")
    if listen is None and socket is None:
        raise ConfigError("listen", "TCP and the Unix socket are both off: nothing to serve on")
    return Config(state_dir=state_dir, listen=listen, socket=socket.absolute() if socket else None,
                  token_file=token_file.absolute() if token_file else None, token=token, **values)


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here: a daemon started without --config never needs it (memory, issue 21)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    data = {k.replace("-", "_"): v for k, v in data.items() if k.replace("-", "_") not in RETIRED}
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting in {path}")
    return data


def _read_token(path: Path) -> str:
    """An explicit token file: it must be the daemon user's alone (see daemon.tokens)."""
    try:
        return read_private(path, follow_symlinks=True)
    except TokenFileError as exc:
        raise ConfigError("token_file", str(exc)) from None
