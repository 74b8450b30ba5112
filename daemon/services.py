"""A services file: managed processes declared by name, and the plan that applies it.

``stablehand apply FILE`` (and ``serve --services FILE``) reads a TOML file of
``[services.NAME]`` tables, checks all of it, orders the services by their
``depends_on``, compares them with what the daemon runs, and carries out the
plan (:mod:`daemon.services_apply`). This module is the pure part: parsing,
validation, ordering, the plan, and when a dependency's condition is met. No
I/O but reading the file.

The file is snake_case (``health_check``, ``max_restarts``, ``log_line``); the
API body it becomes is the native camelCase one, built from the same parsed
:mod:`daemon.managed` dataclasses the daemon uses, so a field the daemon would
refuse is refused here first, naming ``services.NAME.field``, before anything is
started.

Decisions where the issue is silent:

- A service's identity is its name; what it *is* is the API body it starts
  with (argv or command, cwd, env, grace, restart, health check, ready), with
  every default filled in. Its fingerprint, the SHA-256 of that body as
  canonical JSON, is kept in the record's ``ref`` as ``services:<hex>``. Apply
  keeps a live record whose ref carries the same fingerprint, and replaces one
  whose ref differs (a changed spec, or a process of that name started some
  other way). Writing a default out (``initial_backoff_ms = 500``) changes
  nothing. ``depends_on`` is not part of the fingerprint: a new dependency
  orders the next start, it does not restart a running service.
- Only a live record (queued, running, terminating) counts as present; a
  service whose newest record is idle is started again. A one-shot service (a
  migration) therefore runs again on each apply, as ``docker compose up``
  reruns an exited container.
- ``cwd`` defaults to the file's directory and a relative one is taken from
  there, and ``env`` is exactly what the file says (added to the daemon's
  environment): applying a file gives the same processes whoever runs it and
  from wherever. ``restart`` left out is the API's default (``never``);
  ``restart = "always"`` is short for ``{ policy = "always" }``, and a policy
  may be spelt ``on-failure`` as on the command line.
- ``depends_on`` is a table ``{ name = "started" | "healthy" |
  "completed_successfully" }`` or a list of names (each ``started``).
  ``started`` is met once the dependency is running and ready (or has already
  exited with success); ``healthy`` needs the dependency to have a health
  check; ``completed_successfully`` cannot be asked of a service whose policy
  is ``always`` (it never completes). An unknown dependency or a cycle
  (``a -> b -> a``) is an error before anything is started.
- Order: each service after its dependencies, otherwise in the file's order.
  With ``--prune``, what is stopped is stopped first (it may hold a port a new
  one needs): live records whose ref starts with ``services:`` and whose name
  the file no longer declares. A record started without a services file is
  never pruned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import managed

REF_PREFIX = "services:"
CONDITIONS = ("started", "healthy", "completed_successfully")
LIVE_STATES = ("queued", "running", "terminating")
SERVICE_FIELDS = ("argv", "command", "cwd", "env", "grace", "restart", "health_check", "ready",
                  "depends_on")


class ServicesError(ValueError):
    """A services file that cannot be applied; the message names the file's field."""


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    name: str
    body: Mapping[str, Any]                    # the POST /processes body, without ``ref``
    depends_on: tuple[tuple[str, str], ...] = ()   # (name, condition), in the file's order

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def ref(self) -> str:
        return REF_PREFIX + self.fingerprint

    def start_body(self) -> dict[str, Any]:
        return {**self.body, "ref": self.ref}


# --- reading the file ------------------------------------------------------------------------

def load(path: str | os.PathLike[str]) -> list[Service]:
    """The services of a file, in the order they start. ServicesError if anything is wrong."""
    file = Path(path)
    try:
        text = file.read_bytes().decode()
    except OSError as exc:
        raise ServicesError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ServicesError(f"{file} is not UTF-8 text") from None
    try:
        return parse(text, file.absolute().parent)
    except ServicesError as exc:
        raise ServicesError(f"{file}: {exc}") from None


def parse(text: str, base_dir: Path) -> list[Service]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServicesError(f"not valid TOML: {exc}") from None
    return from_data(data, base_dir)


def from_data(data: Mapping[str, Any], base_dir: Path) -> list[Service]:
    """Services from a parsed file (its top-level table), checked and in start order."""
    unknown = sorted(set(data) - {"services"})
    if unknown:
        raise ServicesError(f"{unknown[0]} is not known at the top level (only [services.NAME])")
    table = data.get("services")
    if not isinstance(table, dict) or not table:
        raise ServicesError("no services: declare at least one [services.NAME] table")
    services = {name: _service(name, value, base_dir) for name, value in table.items()}
    _check_dependencies(services)
    return order(services)


def _service(name: str, value: Any, base_dir: Path) -> Service:
    where = f"services.{name}"
    try:
        managed.check_name(name)
    except ValueError as exc:
        raise ServicesError(f"{where}: the {exc}") from None
    if not isinstance(value, dict):
        raise ServicesError(f"{where} must be a table")
    unknown = sorted(set(value) - set(SERVICE_FIELDS))
    if unknown:
        raise ServicesError(f"{where}.{unknown[0]} is not a known field "
                            f"(known: {', '.join(SERVICE_FIELDS)})")
    body: dict[str, Any] = {"name": name, **_program(value, where)}
    body["cwd"] = _cwd(value.get("cwd"), base_dir, where)
    body["env"] = _env(value.get("env"), where)
    if value.get("grace") is not None:
        grace = value["grace"]
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace < 1e9:
            raise ServicesError(f"{where}.grace must be a number of seconds, 0 or more")
        body["grace"] = grace
    spec = _managed(value, where)
    body.update({key: item for key, item in managed.spec_to_wire(spec, camel=True).items()
                 if item is not None})
    # Plain JSON types (no enums): what the daemon stores is what is fingerprinted.
    return Service(name, json.loads(json.dumps(body)), _depends_on(value.get("depends_on"), where))


def _program(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    if ("argv" in value) == ("command" in value):
        raise ServicesError(f"{where} needs exactly one of argv or command")
    if "command" in value:
        command = value["command"]
        if not isinstance(command, str) or not command.strip() or "\0" in command:
            raise ServicesError(f"{where}.command must be a non-empty string (run by /bin/sh -c)")
        return {"command": command}
    argv = value["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\0" not in a
                                                         for a in argv) or not argv[0]:
        raise ServicesError(f"{where}.argv must be a non-empty list of strings")
    return {"argv": list(argv)}


def _cwd(value: Any, base_dir: Path, where: str) -> str:
    if value is None:
        return str(base_dir)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ServicesError(f"{where}.cwd must be a directory path")
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


def _env(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServicesError(f"{where}.env must be a table of strings, e.g. env = {{ KEY = \"value\" }}")
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise ServicesError(f"{where}.env: {key!r} is not a variable name")
        if not isinstance(item, str) or "\0" in item:
            raise ServicesError(f"{where}.env.{key} must be a string (quote it: {key} = \"{item}\")")
    return dict(value)


def _managed(value: Mapping[str, Any], where: str) -> managed.ManagedSpec:
    """restart, health_check and ready, read by the daemon's own parsers (snake_case)."""
    restart_value = value.get("restart")
    if isinstance(restart_value, str):
        restart_value = {"policy": restart_value}
    if isinstance(restart_value, dict) and isinstance(restart_value.get("policy"), str):
        restart_value = {**restart_value, "policy": restart_value["policy"].replace("-", "_")}
    health_value = value.get("health_check")
    if isinstance(health_value, dict) and isinstance(health_value.get("command"), str):
        health_value = {**health_value, "command": ["/bin/sh", "-c", health_value["command"]]}
    if isinstance(health_value, dict) and health_value.get("type") in ("http", "tcp") \
            and health_value.get("port") is None:
        raise ServicesError(f"{where}.health_check.port is required for a {health_value['type']} check")
    try:
        restart = managed.restart_from_wire(restart_value, camel=False) \
            if restart_value is not None else managed.RestartPolicy()
        health = managed.health_from_wire(health_value, camel=False, allow_exec=True) \
            if health_value is not None else None
    except ValueError as exc:
        raise ServicesError(f"{where}.{exc}") from None
    ready = _ready(value.get("ready"), where)
    if ready is not None and ready.health_check and health is None:
        raise ServicesError(f"{where}.ready.health_check needs a health_check")
    return managed.ManagedSpec(restart, health, ready)


_READY_KEYS = {"port": "port", "log_line": "logLine", "health_check": "healthCheck"}


def _ready(value: Any, where: str) -> managed.Ready | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ServicesError(f"{where}.ready must be a table: {{ port = N }}, {{ log_line = \"regex\" }} "
                            "or { health_check = true }")
    unknown = sorted(set(value) - set(_READY_KEYS))
    if unknown:
        raise ServicesError(f"{where}.ready.{unknown[0]} is not a known field")
    try:
        return managed.ready_from_wire({_READY_KEYS[key]: item for key, item in value.items()})
    except ValueError as exc:
        message = str(exc)
        for snake, camel in _READY_KEYS.items():
            message = message.replace(camel, snake)
        raise ServicesError(f"{where}.{message}") from None


def _depends_on(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return tuple((name, "started") for name in value)
    if not isinstance(value, dict):
        raise ServicesError(f"{where}.depends_on must be a table {{ name = \"condition\" }} "
                            "or a list of names")
    for name, condition in value.items():
        if condition not in CONDITIONS:
            raise ServicesError(f"{where}.depends_on.{name} must be one of {', '.join(CONDITIONS)}")
    return tuple(value.items())


def _check_dependencies(services: Mapping[str, Service]) -> None:
    for service in services.values():
        for name, condition in service.depends_on:
            where = f"services.{service.name}.depends_on"
            dependency = services.get(name)
            if dependency is None:
                raise ServicesError(f"{where}: unknown service {name!r} (declared: "
                                    f"{', '.join(sorted(services))})")
            if condition == "healthy" and dependency.body.get("healthCheck") is None:
                raise ServicesError(f"{where}.{name} is 'healthy', but {name} has no health_check")
            if condition == "completed_successfully" and \
                    dependency.body["restart"]["policy"] == managed.Policy.ALWAYS:
                raise ServicesError(f"{where}.{name} is 'completed_successfully', but {name}'s "
                                    "restart policy is 'always': it never completes")


def order(services: Mapping[str, Service]) -> list[Service]:
    """Each service after its dependencies, else in the given order; a cycle is an error
    naming it (``a -> b -> a``). Unknown dependencies must have been checked before."""
    done: dict[str, Service] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise ServicesError(f"dependency cycle: {' -> '.join(cycle)}")
        path.append(name)
        for dependency, _ in services[name].depends_on:
            visit(dependency)
        path.pop()
        done[name] = services[name]

    for name in services:
        visit(name)
    return list(done.values())


# --- the plan --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    action: str                          # create | restart | keep | stop
    name: str
    service: Service | None = None       # None for stop
    record: Mapping[str, Any] | None = None   # the live record kept, replaced or stopped
    why: str = ""

    def describe(self) -> str:
        """One line of ``apply --dry-run``."""
        line = f"{self.action:<8} {self.name}"
        if self.record is not None:
            line += f"  (process {self.record['id']}{': ' + self.why if self.why else ''})"
        elif self.why:
            line += f"  ({self.why})"
        return line


def live_by_name(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest live record carrying each name."""
    found: dict[str, Mapping[str, Any]] = {}
    for record in records:
        name = record.get("name")
        if name and record.get("state") in LIVE_STATES and \
                (name not in found or record["id"] > found[name]["id"]):
            found[name] = record
    return found


def plan(services: Sequence[Service], records: Iterable[Mapping[str, Any]],
         prune: bool = False) -> list[Step]:
    """What apply does, in order: stops (with ``prune``) first, then each service in start
    order. ``records``: what the daemon has (any states; only live ones count), at least
    the newest record of each declared name and, for ``prune``, every live record whose
    ref starts with ``services:``."""
    records = list(records)
    live = live_by_name(records)
    declared = {service.name for service in services}
    steps: list[Step] = []
    if prune:
        seen: set[int] = set()
        for found in sorted(records, key=lambda r: r["id"]):
            name = found.get("name")
            if found.get("state") in LIVE_STATES and str(found.get("ref") or "").startswith(
                    REF_PREFIX) and name not in declared and found["id"] not in seen:
                seen.add(found["id"])
                steps.append(Step("stop", str(name or found["id"]), record=found,
                                  why="no longer in the file"))
    for service in services:
        record = live.get(service.name)
        if record is None:
            steps.append(Step("create", service.name, service))
        elif record.get("state") == "terminating":
            steps.append(Step("restart", service.name, service, record, "it is stopping"))
        elif record.get("ref") == service.ref:
            steps.append(Step("keep", service.name, service, record))
        elif str(record.get("ref") or "").startswith(REF_PREFIX):
            steps.append(Step("restart", service.name, service, record, "its spec changed"))
        else:
            steps.append(Step("restart", service.name, service, record,
                              "not started from a services file"))
    return steps


def condition(record: Mapping[str, Any], wanted: str) -> tuple[bool | None, str]:
    """Whether a dependency's record meets ``wanted``: (True, ""), (None, what it is waiting
    for) while it may still, or (False, why not) once it never will."""
    state = record.get("state")
    info = record.get("managed") or {}
    exit_state = record.get("exitState")
    if state == "idle":
        if exit_state == "success" and wanted in ("started", "completed_successfully"):
            return True, ""
        ended = f"exit code {record['exitCode']}" if record.get("exitCode") is not None else \
            f"signal {record['exitSignal']}" if record.get("exitSignal") else (record.get("error") or "")
        detail = f" ({ended})" if ended else ""
        return False, f"it ended {exit_state or 'idle'}{detail}" + \
            (f": {info['lastError']}" if info.get("lastError") else "")
    if state == "terminating":
        return False, "it is being stopped"
    if wanted == "started":
        if state == "running" and info.get("status", "running") == "running":
            return True, ""
        return None, "to start" if info.get("status") != "backing_off" else "to start (backing off)"
    if wanted == "healthy":
        if state == "running" and info.get("healthStatus") == "healthy":
            return True, ""
        return None, f"to be healthy (health: {info.get('healthStatus', 'unknown')})"
    return None, "to complete"
