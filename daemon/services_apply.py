"""Applying a services file: carry out the plan of :mod:`daemon.services` through the API.

Everything goes through :class:`daemon.client.Client` (blocking calls), so the
daemon has one way of starting and stopping processes, whoever asks. ``stablehand
apply`` runs :func:`apply` in the CLI; ``serve --services FILE`` runs it in a
thread once the daemon is ready, against the daemon's own Unix socket
(:class:`AtStartup`), and logs ``services.applied`` or ``services.failed``
(``services.interrupted`` when the daemon stops first: every wait checks a stop flag, so
an apply never holds up a shutdown).

Decisions where the issue is silent:

- Steps run one at a time, in the plan's order; the first failure ends the apply
  (:class:`ApplyFailed` names the service and why) and what was started stays.
- Before a service is created or restarted, each of its dependencies' conditions
  is waited for, by polling the dependency's record, up to ``wait_timeout`` each
  (60 s by default); a dependency that ended and so can never meet its condition
  fails the apply at once.
- A restart waits for the dependencies first, then stops the old record (kill:
  SIGTERM to its tree, SIGKILL after its grace; a managed process is not started
  again after a kill), waits until it is idle, so its name is free, and starts the
  new one. A pruned record is stopped the same way.
- At start-up nothing is pruned: ``serve --services`` creates what is missing
  and restarts what changed; ``stablehand apply --prune`` removes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import ApiError, Client, ConnectionFailed
from .services import LIVE_STATES, REF_PREFIX, Service, ServicesError, Step, condition, plan

if TYPE_CHECKING:
    from .config import Config
    from .systemd import SystemdEnv

DEFAULT_WAIT = 60.0
POLL = 0.1                     # seconds between two looks at a dependency's record
MAX_PAGE = 1000
PAST = {"create": "created", "restart": "restarted", "keep": "kept", "stop": "stopped"}


class ApplyFailed(Exception):
    """A step of the plan failed; the message names the service and why."""


def _quiet(_: str) -> None:
    return None


def fetch_records(client: Client, services: Sequence[Service], prune: bool) -> list[dict[str, Any]]:
    """What the plan needs: the newest record of each declared name and, to prune, every
    live record made by a services file."""
    records: list[dict[str, Any]] = []
    for service in services:
        records += client.list(name=service.name, limit=1)["processes"]
    if prune:
        for state in LIVE_STATES:
            cursor = None
            while True:
                page = client.list(state=state, limit=MAX_PAGE, cursor=cursor)
                records += [r for r in page["processes"]
                            if str(r.get("ref") or "").startswith(REF_PREFIX)]
                if not (cursor := page.get("next")):
                    break
    return records


def apply(client: Client, services: Sequence[Service], *, prune: bool = False,
          wait_timeout: float = DEFAULT_WAIT, say: Callable[[str], None] = _quiet,
          stop: threading.Event | None = None) -> dict[str, list[str]]:
    """Bring the daemon in line with ``services``; returns the names per action
    (``created``, ``restarted``, ``kept``, ``stopped``). ApplyFailed, or the client's
    ApiError / ConnectionFailed when the daemon fails us."""
    steps = plan(services, fetch_records(client, services, prune), prune)
    return run_plan(client, steps, wait_timeout=wait_timeout, say=say, stop=stop)


def run_plan(client: Client, steps: Sequence[Step], *, wait_timeout: float = DEFAULT_WAIT,
             say: Callable[[str], None] = _quiet,
             stop: threading.Event | None = None) -> dict[str, list[str]]:
    stop = stop or threading.Event()
    done: dict[str, list[str]] = {past: [] for past in PAST.values()}
    ids: dict[str, int] = {}
    for step in steps:
        if step.action == "stop":
            assert step.record is not None
            _stop(client, step.record, step.name, wait_timeout, stop)
            say(f"{step.name}: stopped (process {step.record['id']})")
        elif step.action == "keep":
            assert step.record is not None
            ids[step.name] = int(step.record["id"])
            say(f"{step.name}: kept (process {step.record['id']})")
        else:
            assert step.service is not None
            for name, wanted in step.service.depends_on:
                _await_dependency(client, step.name, name, ids[name], wanted, wait_timeout, stop, say)
            was = ""
            if step.record is not None:
                _stop(client, step.record, step.name, wait_timeout, stop)
                was = f", was {step.record['id']}"
            record = _start(client, step.service)
            ids[step.name] = int(record["id"])
            say(f"{step.name}: {PAST[step.action]} (process {record['id']}{was})")
        done[PAST[step.action]].append(step.name)
    return done


def _start(client: Client, service: Service) -> dict[str, Any]:
    try:
        record: dict[str, Any] = client.request("POST", "/processes", service.start_body())[1]
    except ApiError as exc:
        raise ApplyFailed(f"{service.name}: the daemon refused to start it: {exc.message} "
                          f"(HTTP {exc.status})") from None
    if record.get("state") == "idle" and record.get("exitState") == "failed" \
            and record.get("exitCode") is None and record.get("exitSignal") is None:   # never ran
        raise ApplyFailed(f"{service.name}: it failed to start: {record.get('error') or 'no reason given'}")
    return record


def _stop(client: Client, record: Mapping[str, Any], name: str, timeout: float,
          stop: threading.Event) -> None:
    """Kill a record (a 409: it is already stopping or idle) and wait until it is idle."""
    process_id = int(record["id"])
    try:
        client.kill(process_id)
    except ApiError as exc:
        if exc.status == 404:
            return
        if exc.status != 409:
            raise ApplyFailed(f"{name}: cannot stop process {process_id}: {exc.message}") from None
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApplyFailed(f"{name}: process {process_id} was not idle {timeout:g}s after "
                              "it was stopped")
        if client.wait(process_id, timeout=min(1.0, left)).get("state") == "idle":
            return
    raise ApplyFailed("the daemon is stopping")


def _await_dependency(client: Client, name: str, dependency: str, process_id: int, wanted: str,
                      timeout: float, stop: threading.Event, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        met, why = condition(client.get(process_id), wanted)
        if met:
            return
        if met is False:
            raise ApplyFailed(f"{name}: its dependency {dependency} will never be "
                              f"{wanted.replace('_', ' ')}: {why}")
        if time.monotonic() >= deadline:
            raise ApplyFailed(f"{name}: timed out after {timeout:g}s waiting for {dependency} {why}")
        if not told:
            say(f"{name}: waiting for {dependency} {why}")
            told = True
        if stop.wait(POLL):
            raise ApplyFailed("the daemon is stopping")


# --- serve --services --------------------------------------------------------------------------

def load_for_serve(path: Path) -> list[Service]:
    """The file ``serve --services`` names, checked before the daemon starts: a bad file is a
    bad setting (exit 78), as a bad config file is."""
    from . import services
    from .config import ConfigError
    try:
        return services.load(path)
    except ServicesError as exc:
        raise ConfigError("services", str(exc)) from None


def own_target(config: Config, sd: SystemdEnv) -> dict[str, Any] | None:
    """How the daemon reaches its own API: its Unix socket (a passed one too), else TCP on
    loopback; None if it serves neither."""
    tcp: list[tuple[str, int]] = []
    if sd.listen_fds:
        for fd, _ in sd.listen_fds:
            sock = socket.socket(fileno=fd)
            try:
                family, address = sock.family, sock.getsockname()
            finally:
                sock.detach()
            if family == socket.AF_UNIX and isinstance(address, str) and address:
                return {"socket_path": address, "token": config.token}
            if family in (socket.AF_INET, socket.AF_INET6):
                tcp.append((address[0], address[1]))
    else:
        if config.socket is not None:
            return {"socket_path": config.socket, "token": config.token}
        if config.listen is not None:
            tcp.append((config.listen.host, config.listen.port))
    if not tcp:
        return None
    host, port = tcp[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)   # a wildcard
    return {"url": f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}",
            "token": config.token}


class AtStartup:
    """``serve --services FILE``: the apply, in a thread, once the daemon is ready."""

    def __init__(self, path: Path, services: Sequence[Service], target: dict[str, Any] | None) -> None:
        self.path, self.services, self.target = path, list(services), target
        self.stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        """Stop waiting (the daemon is stopping) and let the thread end."""
        self.stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        import structlog
        log = structlog.get_logger("stablehand.services")
        if self.target is None:
            log.error("services.failed", file=str(self.path),
                      error="the daemon serves neither a Unix socket nor TCP to apply through")
            return
        target = self.target
        try:
            done = await asyncio.to_thread(
                lambda: apply(Client(timeout=30.0, **target), self.services, stop=self.stop))
        except (ApplyFailed, ApiError, ConnectionFailed) as exc:
            if self.stop.is_set():
                log.info("services.interrupted", file=str(self.path), detail=str(exc))
            else:
                log.error("services.failed", file=str(self.path), error=str(exc))
            return
        except Exception:   # a bug here must not stop the daemon's shutdown from finishing
            log.exception("services.failed", file=str(self.path))
            return
        log.info("services.applied", file=str(self.path), **done)
