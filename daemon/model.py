"""The process record, its states and the transition table — pure data, no I/O.

Every state change in Stablehand goes through :func:`transition`, so the table
below is the single place that says what may happen to a process. The supervisor
names the event it observed; the table answers with the new state and, for a
process that became idle, its exit state. A pair that is not in the table is a
conflict (HTTP 409, :class:`InvalidTransition`), never a silent no-op.

Beside them: :class:`StartSpec`, a validated request to start a process, which
becomes a :class:`Process` once the supervisor has created it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import operator
import time
from enum import StrEnum
from typing import Any

from .errors import Conflict
from .managed import ManagedSpec, ManagedState, spec_to_wire, state_to_wire


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    IDLE = "idle"
    TERMINATING = "terminating"


class ExitState(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


class Event(StrEnum):
    ADMIT = "admit"                        # a slot is free: run it
    ENQUEUE = "enqueue"                    # no slot: wait in FIFO order
    SPAWN_FAILED = "spawn_failed"          # ENOENT, EACCES, bad cwd...
    EXITED_OK = "exited_ok"                # exit status 0
    EXITED_ERROR = "exited_error"          # non-zero, or a signal nobody here sent
    KILL = "kill"                          # kill/stop asked by a client
    EXPIRE = "expire"                      # the process's own timeout ran out
    STOPPED_AFTER_KILL = "stopped_after_kill"
    STOPPED_AFTER_EXPIRE = "stopped_after_expire"
    LOST = "lost"                          # vanished while the daemon was down
    RUN_ENDED = "run_ended"                # a managed run ended and its next run is due


class StopReason(StrEnum):
    KILL = "kill"
    TIMEOUT = "timeout"


# Named groups of states: what a guard asks of a record, said once. Each is checked
# against the table below by tests/unit/test_model.py.
LIVE = frozenset({State.QUEUED, State.RUNNING, State.TERMINATING})  # may still change: kept in memory
ACTIVE = frozenset({State.RUNNING, State.TERMINATING})   # a process exists and holds a max_concurrent slot
STOPPABLE = frozenset({State.QUEUED, State.RUNNING})     # a kill is accepted (the table has it)
SIGNALLABLE = frozenset({State.RUNNING})   # a client's signals and stdin reach it (not once being stopped)
SETTLED = frozenset({State.IDLE})          # final: no event leaves it

_NEW = None  # the "from" state of a record being created

TRANSITIONS: dict[tuple[State | None, Event], tuple[State, ExitState | None]] = {
    (_NEW, Event.ADMIT): (State.RUNNING, None),
    (_NEW, Event.ENQUEUE): (State.QUEUED, None),
    (State.QUEUED, Event.ADMIT): (State.RUNNING, None),
    (State.QUEUED, Event.KILL): (State.IDLE, ExitState.CANCELED),
    (State.QUEUED, Event.SPAWN_FAILED): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.SPAWN_FAILED): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.EXITED_OK): (State.IDLE, ExitState.SUCCESS),
    (State.RUNNING, Event.EXITED_ERROR): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.LOST): (State.IDLE, ExitState.FAILED),
    (State.RUNNING, Event.RUN_ENDED): (State.RUNNING, None),
    (State.RUNNING, Event.KILL): (State.TERMINATING, None),
    (State.RUNNING, Event.EXPIRE): (State.TERMINATING, None),
    (State.TERMINATING, Event.STOPPED_AFTER_KILL): (State.IDLE, ExitState.CANCELED),
    (State.TERMINATING, Event.STOPPED_AFTER_EXPIRE): (State.IDLE, ExitState.TIMEOUT),
}


class InvalidTransition(Conflict):
    """The event cannot happen to a process in its current state: a 409, never a 500.

    The supervisor checks a request against the named groups above first and
    answers with the route's own message ("process 7 is already idle"); ``message``
    lets a caller give that message here too. A pair that still reaches the table
    unguarded gets the generic one.
    """

    def __init__(self, state: State | None, event: Event, message: str | None = None) -> None:
        super().__init__(message or
                         f"cannot {event.value} a process that is {state.value if state else 'new'}")
        self.state = state
        self.event = event


def transition(state: State | None, event: Event) -> tuple[State, ExitState | None]:
    """Return (new state, exit state) for ``event`` in ``state``, or raise InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def stopped_event(reason: StopReason | str | None) -> Event:
    """The event that ends a terminating process, by why it was stopped."""
    return Event.STOPPED_AFTER_EXPIRE if reason == StopReason.TIMEOUT else Event.STOPPED_AFTER_KILL


_second_formatted: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a ``Z``: 2026-01-01T00:00:00.000Z.

    Several timestamps are taken per transition, so the date and time of the
    current second are formatted once and reused.
    """
    global _second_formatted
    now = time.time()
    second = int(now)
    if _second_formatted[0] != second:
        _second_formatted = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_formatted[1]}.{int((now - second) * 1000):03d}Z"


def parse_iso(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_to_epoch(text: str | None) -> float | None:
    return None if text is None else parse_iso(text).timestamp()


@dataclasses.dataclass(slots=True)
class Process:
    """One row of the registry. Field names are snake_case here, camelCase on the wire."""

    id: int
    state: State
    argv: list[str]
    created_at: str
    ref: str | None = None
    command: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    grace: float | None = None
    stdin: str = "null"
    exit_state: ExitState | None = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    pid: int | None = None
    pid_start_time: float | None = None
    boot_id: str | None = None
    exit_code: int | None = None
    exit_signal: str | None = None
    stop_reason: StopReason | None = None
    stop_requested_at: str | None = None
    stop_grace: float | None = None
    stop_signal: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    stdout_mode: str = "capture"
    stderr_mode: str = "capture"
    name: str | None = None
    managed: ManagedSpec | None = None           # restarted per its policy (daemon/managed.py)
    managed_state: ManagedState | None = None
    tty: dict[str, int] | None = None            # {rows, cols}: runs on a terminal (replaced, never mutated)
    tty_token: str | None = None                 # SHA-256 (hex) of a Tensorlake PTY session's token
    lease: float | None = None                   # seconds its owner's renewals keep it alive for
    lease_expires_at: str | None = None          # when it is stopped unless renewed (supervisor/leases.py)

    def columns(self) -> dict[str, Any]:
        """Every field by name, values shared (not deep-copied as dataclasses.asdict would)."""
        return dict(zip(_FIELD_NAMES, _all_fields(self), strict=True))

    def copy(self) -> Process:
        """A shallow snapshot (argv and env shared, as dataclasses.replace would).

        Taken several times per transition, so it skips replace()'s field
        introspection: one attrgetter call and a positional __init__.
        """
        snapshot = Process(*_all_fields(self))
        if self.managed_state is not None:   # the one mutable part a snapshot must not share
            snapshot.managed_state = dataclasses.replace(self.managed_state)
        return snapshot

    def to_json(self) -> dict[str, Any]:
        """The public record: Cyrnel's fields first, then Stablehand's additions.

        The shape follows Cyrnel's schema (seed 004) as a strict generated client
        reads it: ``ref`` is an optional non-empty string, so it is left out when
        absent, never ``null``; ``exitState``, ``error`` and ``completedAt`` are
        required and nullable, so they are always present, ``null`` until known.
        ``stdin`` is ``"pipe"`` or ``null`` (the registry stores the text "null";
        only the wire says it as JSON's null). tests/conformance checks all of it.

        ``env`` is deliberately left out: it often carries secrets, and the
        caller already knows what it sent.
        """
        record: dict[str, Any] = {
            "id": self.id,
            "ref": self.ref,
            "state": self.state.value,
            "exitState": self.exit_state.value if self.exit_state else None,
            "error": self.error,
            "createdAt": self.created_at,
            "completedAt": self.completed_at,
            "argv": self.argv,
            "command": self.command,
            "cwd": self.cwd,
            "pid": self.pid,
            "exitCode": self.exit_code,
            "exitSignal": self.exit_signal,
            "startedAt": self.started_at,
            "timeout": self.timeout,
            "grace": self.grace,
            "stdin": "pipe" if self.stdin == "pipe" else None,
            "outputTruncated": bool(self.stdout_dropped or self.stderr_dropped),
        }
        if self.ref is None:
            del record["ref"]
        if self.name is not None:
            record["name"] = self.name
        if self.managed is not None and self.managed_state is not None:
            record["managed"] = {**state_to_wire(self.managed_state, camel=True),
                                 **spec_to_wire(self.managed, camel=True)}
        if self.tty is not None:
            record["tty"] = dict(self.tty)
        if self.lease is not None:
            record["lease"] = self.lease
            record["leaseExpiresAt"] = self.lease_expires_at
        return record


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Process))
_all_fields = operator.attrgetter(*_FIELD_NAMES)


@dataclasses.dataclass(slots=True)
class StartSpec:
    """A validated request to start a process."""

    argv: list[str]
    command: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    ref: str | None = None
    timeout: float | None = None
    grace: float | None = None
    stdin: str = "null"   # "null" | "pipe"
    stdout_mode: str = "capture"   # "capture" | "discard"
    stderr_mode: str = "capture"
    name: str | None = None
    managed: ManagedSpec | None = None
    tty: dict[str, int] | None = None   # {rows, cols}: a terminal (stdin then is "pipe")
    tty_token: str | None = None        # a Tensorlake PTY session: its token's SHA-256 (never shown)
    lease: float | None = None          # seconds: stopped unless its owner renews (leases.py)
    plain_env: bool = True              # NO_COLOR, TERM, PAGER, GIT_PAGER unless env sets them

    def fingerprint(self) -> str:
        """Stable hash of the request, to tell an Idempotency-Key retry from a reuse."""
        body = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()
