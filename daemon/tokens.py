"""The API bearer token on disk: create it once, read it safely, find it from a client.

TCP needs a token by default. With no ``token_file`` set, the daemon's first
start creates ``<state dir>/token`` and every later start reads it back; the CLI
and :mod:`daemon.client` read the same file to talk TCP. Decisions:

* 32 random bytes (``secrets.token_urlsafe(32)``: 43 URL-safe characters, 256
  bits), so it fits an ``Authorization: Bearer`` header and a shell variable.
* Created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and mode 0600: a symlink or a file
  planted at the path is never written through; two racing starts cannot both
  create it (the state-dir lock already prevents that, this is belt and braces).
* The daemon refuses (exit 78, :class:`TokenFileError`) a token file it would
  read that is group- or world-accessible or owned by another user, as ssh does
  with private keys: such a token is no secret, and a file someone else owns
  lets them choose the token. The file a daemon created in its own state dir is
  opened with ``O_NOFOLLOW``; an explicit ``--token-file`` may be a symlink
  (systemd credentials, Kubernetes secrets), its target is what is checked.
* The path is logged, never the value; the value never enters a child's
  environment (the supervisor drops every ``STABLEHAND_*`` variable, and the
  token is read from a file, not taken from the daemon's environment).
* Clients do not check modes (the daemon did); they use the default file only
  for loopback URLs, so a ``--url`` pointing elsewhere never receives this
  machine's token unless it was given explicitly.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from .errors import StablehandError

FILE_NAME = "token"
TOKEN_BYTES = 32
# The largest token file read (a token is one short line; anything bigger is not one).
MAX_TOKEN_FILE = 4096


class TokenFileError(StablehandError):
    """The token file cannot be used; the message names it and says what to do."""


def generate() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def create(path: Path) -> str:
    """Create ``path`` (0600, exclusively, never through a symlink) holding a new token.

    Raises FileExistsError when something (file or symlink) is already there.
    """
    token = generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return token


def read_private(path: Path, *, follow_symlinks: bool) -> str:
    """The token in ``path``, which must be a regular file the daemon's euid owns with no
    group or other permissions. Raises :class:`TokenFileError` naming the file."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TokenFileError(f"token file {path} is a symlink; refusing to follow it "
                                 "(remove it: a new token is created on start)") from None
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise TokenFileError(f"token file {path} is owned by uid {info.st_uid}, not by uid "
                                 f"{os.geteuid()} that runs the daemon; anyone who owns it chooses "
                                 "the token. Give the daemon its own file (chown it, chmod 600)")
        if info.st_mode & 0o077:
            raise TokenFileError(f"token file {path} is accessible by others (mode "
                                 f"{stat.S_IMODE(info.st_mode):04o}), so its token is no secret; "
                                 f"run `chmod 600 {path}` (and consider a new token)")
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    return _parse(path, data)


def ensure(path: Path) -> tuple[str, bool]:
    """The daemon's own token at ``path``: (token, True) when created now, else read back."""
    try:
        return create(path), True
    except FileExistsError:
        return read_private(path, follow_symlinks=False), False


def _parse(path: Path, data: bytes) -> str:
    if len(data) > MAX_TOKEN_FILE:
        raise TokenFileError(f"token file {path} is larger than {MAX_TOKEN_FILE} bytes; "
                             "it should hold one token")
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {path} is not UTF-8 text") from None
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenFileError(f"token file {path} must hold one token: no spaces or control "
                             "characters (it is sent in an HTTP header)")
    return token


# --- the client side ---

def default_token_path(env: Mapping[str, str]) -> Path:
    """Where the daemon keeps its own token by default: ``$STABLEHAND_STATE_DIR`` (the
    daemon's own setting), else its default state dir, then ``/token``."""
    from .config import ENV_PREFIX, default_state_dir
    state_dir = env.get(ENV_PREFIX + "STATE_DIR")
    base = Path(state_dir).expanduser() if state_dir else default_state_dir(env)
    return base / FILE_NAME


def read_plain(path: Path) -> str:
    """A client reading a token file: no mode checks, just one token. Raises OSError or
    TokenFileError."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_TOKEN_FILE + 1)
    return _parse(path, data)


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find(url: str | None, token_file: str | os.PathLike[str] | None = None,
         env: Mapping[str, str] | None = None) -> str | None:
    """The token a client sends, or None. In order: ``token_file`` (given by the caller;
    ``none`` means no token), ``$STABLEHAND_TOKEN_FILE``, ``$STABLEHAND_TOKEN``, and, for a
    loopback ``url`` only, the daemon's default token file if this user can read it.

    An explicit file that cannot be read raises (OSError or TokenFileError): the caller
    asked for it. The default file is skipped silently when absent or unreadable.
    """
    env = os.environ if env is None else env
    explicit = token_file if token_file is not None else env.get("STABLEHAND_TOKEN_FILE") or None
    if explicit is not None:
        if str(explicit).strip().lower() in ("none", "off"):
            return None
        return read_plain(Path(explicit).expanduser())
    if env.get("STABLEHAND_TOKEN", "").strip():
        return env["STABLEHAND_TOKEN"].strip()
    if url is None or not is_loopback_url(url):
        return None
    try:
        return read_plain(default_token_path(env))
    except (OSError, TokenFileError):
        return None
