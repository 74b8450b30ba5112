"""Managed processes as data: restart policy, health check, readiness, and the live status.

A start that carries a ``name``, a ``restart`` policy, a health check or a ready
condition is *managed*: one record (its id never changes) whose child is started
again, per its policy, each time it exits or turns unhealthy. Each child is a
*run*. The record stays ``running`` between runs; where it is in its cycle is
:class:`ManagedState` ``status``. Pure data and pure functions, no I/O, like
:mod:`daemon.model`; the supervisor (supervisor/managing.py) drives it.

Field names and defaults are Tensorlake's (its sandbox daemon's managed processes):
snake_case on its routes, camelCase on the native ones. :func:`spec_from_wire`
reads either and raises ValueError naming the field.

Decisions where the issue is silent:

- Backoff: the n-th restart in a row waits ``initial_backoff_ms * 2**(n-1)``,
  at most ``max_backoff_ms``. A run that stayed up longer than ``max_backoff_ms``
  resets the count of restarts in a row (not ``restartCount``, which counts every
  restart for the record's life), so a service that fails once a day restarts at
  once, and one in a crash loop backs off to the maximum.
- A ``max_backoff_ms`` below ``initial_backoff_ms`` is accepted: every wait is then
  ``max_backoff_ms`` (the formula's cap), as the schema allows it.
- ``max_restarts`` counts restarts for the record's life (null: unlimited). Past it
  the record ends idle/failed, its error naming the count.
- Names: 1–128 characters, no ``/``, no control characters, not all digits (so a
  name never reads as an id or a pid), and no ``%``: a path segment that still holds
  a ``%`` after decoding was not valid percent-encoded UTF-8, and is refused (400)
  rather than looked up. (Tensorlake allows ``%``; a name with one is refused here.)
"""

from __future__ import annotations

import dataclasses
import json
import re
from enum import StrEnum
from typing import Any

MAX_NAME = 128
MAX_NUMBER = 1_000_000_000   # every count and millisecond field (the OpenAPI documents say so)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Policy(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on_failure"
    ALWAYS = "always"


class Status(StrEnum):
    STARTING = "starting"          # a run is up; its ready condition is not met yet
    RUNNING = "running"
    BACKING_OFF = "backing_off"    # between runs: the next starts at next_restart_at
    STOPPED = "stopped"            # ended for good (the record is terminating or idle)


class Health(StrEnum):
    DISABLED = "disabled"          # no health check
    STARTING = "starting"          # within initial_delay, or no probe answered yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclasses.dataclass(frozen=True, slots=True)
class RestartPolicy:
    policy: Policy = Policy.NEVER
    max_restarts: int | None = None
    initial_backoff_ms: int = 500
    max_backoff_ms: int = 30_000

    def backoff_ms(self, in_a_row: int) -> int:
        """The wait before the ``in_a_row``-th restart in a row (1 for the first)."""
        return int(min(self.max_backoff_ms, self.initial_backoff_ms * 2 ** max(0, in_a_row - 1)))

    def wants_restart(self, exit_ok: bool) -> bool:
        return self.policy is Policy.ALWAYS or (self.policy is Policy.ON_FAILURE and not exit_ok)


@dataclasses.dataclass(frozen=True, slots=True)
class HealthCheck:
    type: str                       # http | tcp | exec
    port: int | None = None         # http, tcp (on 127.0.0.1)
    path: str = "/"                 # http
    command: tuple[str, ...] = ()   # exec: argv; exit 0 means healthy
    initial_delay_ms: int = 5000
    interval_ms: int = 1000
    timeout_ms: int = 500
    failure_threshold: int = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """When a run counts as started (``managed.status`` starting → running)."""

    port: int | None = None         # 127.0.0.1:port accepts a connection
    log_line: str | None = None     # a regex matched by a line of stdout or stderr
    health_check: bool = False      # the health check passed once


@dataclasses.dataclass(frozen=True, slots=True)
class ManagedSpec:
    restart: RestartPolicy = RestartPolicy()
    health_check: HealthCheck | None = None
    ready: Ready | None = None


@dataclasses.dataclass(slots=True)
class ManagedState:
    status: Status = Status.STARTING
    run: int = 0                      # the current (or last) run's number, from 1
    restart_count: int = 0            # restarts for the record's life
    restarts_in_a_row: int = 0        # since the last run that stayed up long enough
    health_status: Health = Health.DISABLED
    consecutive_health_failures: int = 0
    last_exit: dict[str, Any] | None = None   # {exit_code, exit_signal, reason, ended_at}
    last_error: str | None = None
    next_restart_at: str | None = None        # ISO 8601, while backing off


# --- storage: one JSON text column each ------------------------------------------------

def spec_to_text(spec: ManagedSpec | None) -> str | None:
    return None if spec is None else json.dumps(dataclasses.asdict(spec), separators=(",", ":"))


def spec_from_text(text: str | None) -> ManagedSpec | None:
    if text is None:
        return None
    data = json.loads(text)
    health = data.get("health_check")
    ready = data.get("ready")
    restart = data.get("restart") or {}
    return ManagedSpec(
        restart=RestartPolicy(**{**restart, "policy": Policy(restart.get("policy", "never"))}),
        health_check=HealthCheck(**{**health, "command": tuple(health.get("command", ()))})
        if health else None,
        ready=Ready(**ready) if ready else None)


def state_to_text(state: ManagedState | None) -> str | None:
    return None if state is None else json.dumps(dataclasses.asdict(state), separators=(",", ":"))


def state_from_text(text: str | None) -> ManagedState | None:
    if text is None:
        return None
    data = json.loads(text)
    data["status"] = Status(data["status"])
    data["health_status"] = Health(data["health_status"])
    return ManagedState(**data)


# --- the wire ------------------------------------------------------------------------------

def check_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"name must be a string of 1 to {MAX_NAME} characters")
    if "/" in name or "%" in name or _CONTROL.search(name):
        raise ValueError("name must not contain '/', '%' or control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("name must be valid UTF-8") from None
    if name.isascii() and name.isdigit():
        raise ValueError("name must not be all digits (it would read as an id or a pid)")
    return name


def _key(name: str, camel: bool) -> str:
    if not camel:
        return name
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _int(data: dict[str, Any], name: str, camel: bool, default: int | None, *, minimum: int,
         where: str, nullable: bool = False) -> int | None:
    key = _key(name, camel)
    value = data.get(key, default)
    if isinstance(value, float) and value.is_integer():   # JSON's 500.0 is the integer 500
        value = int(value)
    if value is None and nullable:
        return None
    if type(value) is not int or value < minimum:
        raise ValueError(f"{where}.{key} must be an integer >= {minimum}"
                         + (" or null" if nullable else ""))
    if value > MAX_NUMBER:   # a later time past year 9999 is no timestamp; Tensorlake's u32 fits
        raise ValueError(f"{where}.{key} must be at most {MAX_NUMBER}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _known(data: dict[str, Any], names: tuple[str, ...], camel: bool, where: str) -> None:
    allowed = {_key(n, camel) for n in names}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a known field")


def restart_from_wire(value: Any, camel: bool) -> RestartPolicy:
    data = _object(value, "restart")
    _known(data, ("policy", "max_restarts", "initial_backoff_ms", "max_backoff_ms"), camel, "restart")
    try:
        policy = Policy(data.get("policy", "on_failure"))
    except ValueError:
        raise ValueError("restart.policy must be never, on_failure or always") from None
    initial = _int(data, "initial_backoff_ms", camel, 500, minimum=1, where="restart")
    most = _int(data, "max_backoff_ms", camel, 30_000, minimum=1, where="restart")
    assert initial is not None and most is not None
    return RestartPolicy(policy, _int(data, "max_restarts", camel, None, minimum=0, where="restart",
                                      nullable=True), initial, most)


def health_from_wire(value: Any, camel: bool, *, allow_exec: bool) -> HealthCheck:
    where = "healthCheck" if camel else "health_check"
    data = _object(value, where)
    _known(data, ("type", "port", "path", "command", "initial_delay_ms", "interval_ms",
                  "timeout_ms", "failure_threshold"), camel, where)
    kind = data.get("type")
    kinds = ("http", "tcp", "exec") if allow_exec else ("http", "tcp")
    if kind not in kinds:
        raise ValueError(f"{where}.type must be {' or '.join(kinds)}")
    port = command = None
    if kind in ("http", "tcp"):
        port = _int(data, "port", camel, None, minimum=1, where=where)
        if port is not None and port > 65535:
            raise ValueError(f"{where}.port must be at most 65535")
    path = data.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or _CONTROL.search(path):
        raise ValueError(f"{where}.path must be a path starting with '/'")
    if kind == "exec":
        command = data.get("command")
        if not isinstance(command, list) or not command or \
                not all(isinstance(a, str) and a and "\0" not in a for a in command):
            raise ValueError(f"{where}.command must be a non-empty list of strings")
    ints = {name: _int(data, name, camel, default, minimum=minimum, where=where)
            for name, default, minimum in (("initial_delay_ms", 5000, 0), ("interval_ms", 1000, 10),
                                           ("timeout_ms", 500, 1), ("failure_threshold", 3, 1))}
    return HealthCheck(kind, port, path, tuple(command or ()), **ints)   # type: ignore[arg-type]


def ready_from_wire(value: Any) -> Ready:
    data = _object(value, "ready")
    _known(data, ("port", "log_line", "health_check"), True, "ready")
    if len(data) != 1:
        raise ValueError("ready must have exactly one of port, logLine, healthCheck")
    if "port" in data:
        port = data["port"]
        if isinstance(port, float) and port.is_integer():
            port = int(port)   # JSON's 80.0 is the integer 80
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError("ready.port must be an integer from 1 to 65535")
        return Ready(port=port)
    if "logLine" in data:
        line = data["logLine"]
        if not isinstance(line, str) or not line:
            raise ValueError("ready.logLine must be a non-empty regular expression")
        try:
            re.compile(line)
        except re.error as exc:
            raise ValueError(f"ready.logLine is not a regular expression: {exc}") from None
        return Ready(log_line=line)
    if data["healthCheck"] is not True:
        raise ValueError("ready.healthCheck must be true")
    return Ready(health_check=True)


def spec_from_wire(body: dict[str, Any], camel: bool) -> ManagedSpec | None:
    """The managed part of a start body, or None when it has none of the fields.

    A ``name`` alone makes a process managed too (addressable by name, with runs),
    with the policy ``never``; a ``restart`` object without a ``policy`` means
    ``on_failure`` (Tensorlake's default).
    """
    health_key = "healthCheck" if camel else "health_check"
    if not any(body.get(k) is not None for k in ("name", "restart", health_key, "ready")):
        return None
    restart = restart_from_wire(body["restart"], camel) if body.get("restart") is not None \
        else RestartPolicy()
    health = health_from_wire(body[health_key], camel, allow_exec=camel) \
        if body.get(health_key) is not None else None
    ready = ready_from_wire(body["ready"]) if camel and body.get("ready") is not None else None
    if ready is not None and ready.health_check and health is None:
        raise ValueError("ready.healthCheck needs a healthCheck")
    if health is not None and health.type in ("http", "tcp") and health.port is None:
        raise ValueError(f"{health_key}.port is required for an {health.type} check")
    return ManagedSpec(restart, health, ready)


def spec_to_wire(spec: ManagedSpec, camel: bool) -> dict[str, Any]:
    def keyed(data: dict[str, Any]) -> dict[str, Any]:
        return {_key(k, camel): list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    out: dict[str, Any] = {"restart": keyed(dataclasses.asdict(spec.restart))}
    out[_key("health_check", camel)] = keyed(dataclasses.asdict(spec.health_check)) \
        if spec.health_check else None
    if camel:
        out["ready"] = None if spec.ready is None else {
            k: v for k, v in keyed(dataclasses.asdict(spec.ready)).items() if v not in (None, False)}
    return out


def state_to_wire(state: ManagedState, camel: bool) -> dict[str, Any]:
    data = dataclasses.asdict(state)
    del data["restarts_in_a_row"]
    if data["last_exit"] is not None:
        data["last_exit"] = {_key(k, camel): v for k, v in data["last_exit"].items()}
    return {_key(k, camel): v.value if isinstance(v, StrEnum) else v for k, v in data.items()}
