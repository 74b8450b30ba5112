"""/metrics' text is what prometheus-client wrote before the daemon stopped importing it.

The daemon renders its eight metrics itself (daemon/metrics.py, issue 21: the library
cost 1 MiB of RSS). prometheus-client stays a test dependency and is the reference
here: the same events fed to both, with the same clock, give the same bytes, escapes
and ``_created`` series included.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.utils import floatToGoString

from daemon import metrics
from daemon.model import ExitState, Process, State


class Reference:
    """daemon/metrics.py as it was, on prometheus-client."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.processes = Gauge("stablehand_processes", "Processes by state", ["state"], registry=r)
        self.queue_length = Gauge("stablehand_queue_length", "Processes waiting for a slot", registry=r)
        self.registry_size = Gauge("stablehand_registry_records", "Records in the registry", registry=r)
        self.started = Counter("stablehand_processes_started", "Processes that reached running", registry=r)
        self.exited = Counter("stablehand_processes_exited", "Processes that became idle, by exit state",
                              ["exit_state"], registry=r)
        self.spawn_latency = Histogram("stablehand_spawn_to_running_seconds",
                                       "From creation to the child running",
                                       buckets=metrics.LATENCY_BUCKETS, registry=r)
        self.stop_latency = Histogram("stablehand_kill_to_idle_seconds",
                                      "From a kill/stop/timeout to the whole tree gone",
                                      buckets=metrics.LATENCY_BUCKETS, registry=r)
        self.http_requests = Counter("stablehand_http_requests", "HTTP requests by route and status",
                                     ["method", "route", "status"], registry=r)

    def count_request(self, method: str, route: str, status: int) -> None:
        self.http_requests.labels(method, route, status).inc()

    def observe(self, record: Process) -> None:
        if record.state is State.RUNNING:
            self.started.inc()
        elif record.state is State.IDLE and record.exit_state is not None:
            self.exited.labels(record.exit_state.value).inc()
            created, started = metrics.iso_to_epoch(record.created_at), metrics.iso_to_epoch(record.started_at)
            if created is not None and started is not None:
                self.spawn_latency.observe(max(0.0, started - created))
            requested = metrics.iso_to_epoch(record.stop_requested_at)
            completed = metrics.iso_to_epoch(record.completed_at)
            if requested is not None and completed is not None:
                self.stop_latency.observe(max(0.0, completed - requested))

    def render(self, counts: dict[str, int], queue_length: int, registry_size: int) -> bytes:
        for state, count in counts.items():
            self.processes.labels(state).set(count)
        self.queue_length.set(queue_length)
        self.registry_size.set(registry_size)
        return generate_latest(self.registry)


def _iso(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


def _record(rng: random.Random) -> Process:
    base = 1_796_314_873 + rng.random()
    if rng.random() < 0.4:
        return Process(id=1, argv=["true"], state=State.RUNNING, created_at=_iso(base))
    return Process(id=1, argv=["true"], state=State.IDLE, exit_state=rng.choice(list(ExitState)),
                   created_at=_iso(base),
                   started_at=_iso(base + rng.choice([0.0004, 0.003, 0.7, 45.0])) if rng.random() < 0.8 else None,
                   stop_requested_at=_iso(base + 1) if rng.random() < 0.5 else None,
                   completed_at=_iso(base + rng.choice([1.0, 1.02, 3.0, 100.0])))


def _texts(target: Any, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    routes = ["/processes", "/processes/{id}", '/odd "route" \\ with\nnewline', "unmatched"]
    yield target.render({"queued": 0, "running": 0, "terminating": 0}, 0, 0)
    for i in range(400):
        if rng.random() < 0.5:
            target.observe(_record(rng))
        else:
            target.count_request(rng.choice(["GET", "POST"]), rng.choice(routes), rng.choice([200, 201, 404]))
        if i % 40 == 0:
            yield target.render({"queued": i, "running": 2 * i, "terminating": 1}, i % 7, 3 * i)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_text_is_byte_for_byte_prometheus_clients(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = []
    for make in (Reference, metrics.Metrics):
        clock = itertools.count(1_796_314_873.37611, 0.123456789)
        monkeypatch.setattr(time, "time", lambda clock=clock: next(clock))
        texts.append(list(_texts(make(), seed)))
        monkeypatch.undo()
    assert texts[0] == texts[1]
    assert metrics.CONTENT_TYPE == CONTENT_TYPE_LATEST


@pytest.mark.parametrize("value", [0.0, 1.0, 0.0005, 30, 2.5, 1e-9, 123456.0, 1234567.0, 1.7963148733761468e9,
                                   -3.5, -1234567.0, math.inf, -math.inf, math.nan, 10**20])
def test_floats_are_written_as_go_writes_them(value: float) -> None:
    assert metrics.go_float(value) == floatToGoString(value)
