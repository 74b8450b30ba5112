"""The keeper's wire protocol, version 1: newline-delimited JSON over a Unix stream socket.

Shared by the keeper (stdlib only) and the daemon's client, so it imports nothing
but the standard library and never asyncio.

Framing: one JSON object per line (``\\n``), UTF-8, ASCII-escaped on the way out
(``ensure_ascii``), so argv and environment strings holding lone surrogates (bytes
that were not UTF-8, decoded with ``surrogateescape``) cross the wire and reach
``execve`` as the very bytes they were. A line longer than :data:`MAX_LINE`
(4 MiB) is refused and the connection closed: the stream cannot be resynchronised.

Conversation: the first line from the daemon must be
``{"op": "hello", "version": 1, "state_dir": "..."}``. Then requests carry a
``seq`` (any JSON value, echoed back) and get exactly one reply, in order:
``{"seq": N, "ok": true, ...}`` or ``{"seq": N, "ok": false, "error": "...", "errno": E}``
(``errno`` is a Linux errno number, or null). Unsolicited events carry an
``event`` key instead of ``seq``: ``{"event": "exit", ...}`` and, once, just
before the keeper closes a connection another hello replaced,
``{"event": "replaced"}``.

Ops: ``spawn``, ``signal``, ``stdin_write``, ``stdin_close``, ``list``, ``ack`` and
``resize`` (added within version 1: an op a keeper does not know is answered
with an error, so adding one needs no new version). ``spawn`` may carry
``"tty": {"rows": R, "cols": C}`` (1..1000 each; null or absent: pipes): the
child runs on a pseudo-terminal whose master the keeper holds, its output
(stdout and stderr merged, as on any terminal) goes to ``<id>.stdout``, and
``stdin_write`` writes to the master (keystrokes). ``{"op": "resize", "id": N,
"rows": R, "cols": C}`` sets the terminal's window size (the kernel sends the
foreground process group SIGWINCH); EBADF for a child without a terminal.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from typing import Any

VERSION = 1
MAX_LINE = 4 * 1024 * 1024          # bytes in one request line
STDIN_BUFFER = 1024 * 1024          # bytes of stdin the keeper holds per child
MAX_ID = 2**63 - 1
SOCKET_NAME = "keeper.sock"
LOCK_NAME = "keeper.lock"
KEEPER_DIR = "keeper"               # <state_dir>/keeper/: the exit journal and the log
JOURNAL_NAME = "exits.journal"
LOG_NAME = "keeper.log"
OUTPUT_DIR = "output"
SUN_PATH_MAX = 107                  # sockaddr_un.sun_path holds 108 bytes, NUL included


class RequestError(Exception):
    """A request the keeper refuses; becomes ``{"ok": false, "error": ..., "errno": ...}``."""

    def __init__(self, message: str, err: int | None = None) -> None:
        super().__init__(message)
        self.errno = err


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One request line as a dict. RequestError for anything that is not a JSON object."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"invalid JSON: {exc}"[:200], errno.EINVAL) from None
    if not isinstance(value, dict):
        raise RequestError("a request is a JSON object", errno.EINVAL)
    return value


def socket_address(state_dir: str, dirfd: int | None = None) -> str:
    """The path to bind or connect for ``<state_dir>/keeper.sock``.

    ``sun_path`` holds 107 bytes. A longer path is reached through
    ``/proc/self/fd/<dirfd>/keeper.sock``, the kernel following the magic link to
    the directory: the caller opens ``dirfd`` (``O_PATH``) and closes it once the
    bind or connect is done. ValueError when the path is too long and no dirfd is given.
    """
    path = os.path.join(state_dir, SOCKET_NAME)
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path
    if dirfd is None:
        raise ValueError(f"socket path too long ({len(os.fsencode(path))} bytes): {path}")
    return f"/proc/self/fd/{dirfd}/{SOCKET_NAME}"


def needs_dirfd(state_dir: str) -> bool:
    return len(os.fsencode(os.path.join(state_dir, SOCKET_NAME))) > SUN_PATH_MAX


# --- request fields (validated before anything is opened or spawned) -----------------

def child_id(request: dict[str, Any]) -> int:
    value = request.get("id")
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise RequestError("id must be an integer from 1 to 2**63-1", errno.EINVAL)
    return value


def string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{what} must be a non-empty list of strings", errno.EINVAL)
    if any("\0" in v for v in value):
        raise RequestError(f"{what} must not contain NUL characters", errno.EINVAL)
    return value


def environment(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RequestError("env must be an object of strings (the complete environment)",
                           errno.EINVAL)
    for key, item in value.items():
        if not isinstance(item, str) or not key or "=" in key or "\0" in key or "\0" in item:
            raise RequestError(f"env entry {key!r} is not a valid variable", errno.EINVAL)
    return value


def choice(request: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = request.get(key, allowed[0])
    if value not in allowed:
        raise RequestError(f"{key} must be one of {', '.join(allowed)}", errno.EINVAL)
    return str(value)


def optional_cap(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise RequestError("max_output_bytes must be a positive integer or null", errno.EINVAL)
    return value


TTY_MAX = 1000                      # most rows, and most cols, of a terminal


def window_size(value: Any) -> tuple[int, int]:
    """``{"rows": R, "cols": C}`` (each 1..1000) as ``(rows, cols)``."""
    if not isinstance(value, dict):
        raise RequestError("tty must be an object {rows, cols} or null", errno.EINVAL)
    rows, cols = value.get("rows"), value.get("cols")
    if type(rows) is not int or type(cols) is not int or not (
            1 <= rows <= TTY_MAX and 1 <= cols <= TTY_MAX):
        raise RequestError(f"tty rows and cols must be integers from 1 to {TTY_MAX}", errno.EINVAL)
    return rows, cols


_VALID_SIGNALS = frozenset(int(s) for s in signal.valid_signals())   # built once: enums are slow


def signal_number(value: Any) -> int:
    if type(value) is not int or (value != 0 and value not in _VALID_SIGNALS):
        raise RequestError(f"{value!r} is not a signal number", errno.EINVAL)
    return value
