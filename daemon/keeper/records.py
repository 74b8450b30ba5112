"""What the keeper client returns and raises: plain records and one error hierarchy.

Each error maps from the errno the keeper gave (:data:`ERRORS`), so the
supervisor can turn them into API answers: StdinFull is a 503, NoSuchChild and
StdinClosed are 409s, SpawnFailed ends a record as failed with its message,
KeeperGone means the keeper must be found again (or started).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Mapping
from typing import Any


class KeeperError(Exception):
    """The keeper refused a request; ``errno`` is the Linux errno it gave (or None)."""

    def __init__(self, message: str, err: int | None = None) -> None:
        super().__init__(message)
        self.errno = err


class KeeperUnavailable(KeeperError):
    """Nothing answers on the keeper's socket (no socket file, or nobody listening)."""


class KeeperRefused(KeeperError):
    """The keeper refused the hello: another state dir, or a protocol version it cannot speak."""


class KeeperGone(KeeperError):
    """The connection to the keeper dropped: it was killed, or another daemon replaced us."""


class SpawnFailed(KeeperError):
    """The child could not be started; the message says why (for the record's ``error``)."""


class NoSuchChild(KeeperError):
    """No live child has that id (ESRCH)."""


class StdinFull(KeeperError):
    """The child is not reading its stdin and the keeper's buffer is full (EAGAIN): a 503."""


class StdinClosed(KeeperError):
    """The stdin pipe is closed, or the child closed its end, or it has none (EPIPE, EBADF)."""


ERRORS: dict[int, type[KeeperError]] = {
    errno.ESRCH: NoSuchChild, errno.EAGAIN: StdinFull, errno.EPIPE: StdinClosed,
    errno.EBADF: StdinClosed}


@dataclasses.dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    start_ticks: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class ChildInfo:
    id: int
    pid: int
    start_ticks: int | None
    stdin_open: bool
    stdout_dropped: int       # first kept byte of the stream file (bytes before it were capped away)
    stderr_dropped: int
    stdout_lost: int          # bytes read but not stored (no hole punching, or a write error)
    stderr_lost: int


@dataclasses.dataclass(frozen=True, slots=True)
class ExitEvent:
    id: int
    pid: int
    code: int | None          # exit code, when it exited
    signal: int | None        # signal number, when a signal ended it
    time: float               # unix time the keeper reaped it
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    stdout_lost: int = 0
    stderr_lost: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    children: list[ChildInfo]
    exits: list[ExitEvent]


def fields_of(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
