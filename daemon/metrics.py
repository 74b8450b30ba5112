"""Prometheus metrics (prometheus-client), one registry per daemon.

Counters and histograms are fed from the supervisor's committed state changes
(a listener, so the hot path pays one dict lookup), HTTP counts from a
middleware; gauges that describe the present (processes by state, queue
length, registry size) are read when /metrics is scraped.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .model import Process, State, iso_to_epoch

CONTENT_TYPE = CONTENT_TYPE_LATEST   # of what render() returns: Prometheus' text format
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.processes = Gauge("stablehand_processes", "Processes by state", ["state"],
                               registry=self.registry)
        self.queue_length = Gauge("stablehand_queue_length", "Processes waiting for a slot",
                                  registry=self.registry)
        self.registry_size = Gauge("stablehand_registry_records", "Records in the registry",
                                   registry=self.registry)
        self.started = Counter("stablehand_processes_started", "Processes that reached running",
                               registry=self.registry)
        self.exited = Counter("stablehand_processes_exited", "Processes that became idle, by exit state",
                              ["exit_state"], registry=self.registry)
        self.spawn_latency = Histogram("stablehand_spawn_to_running_seconds",
                                       "From creation to the child running", buckets=LATENCY_BUCKETS,
                                       registry=self.registry)
        self.stop_latency = Histogram("stablehand_kill_to_idle_seconds",
                                      "From a kill/stop/timeout to the whole tree gone",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_requests = Counter("stablehand_http_requests", "HTTP requests by route and status",
                                     ["method", "route", "status"], registry=self.registry)
        self._request_counters: dict[tuple[str, str, int], Any] = {}

    def count_request(self, method: str, route: str, status: int) -> None:
        """One HTTP request. The labelled child is looked up once per (method, route, status)."""
        key = (method, route, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.http_requests.labels(method, route, status)
        counter.inc()

    def observe(self, record: Process) -> None:
        """Listener for committed state changes."""
        if record.state is State.RUNNING:
            self.started.inc()
        elif record.state is State.IDLE and record.exit_state is not None:
            self.exited.labels(record.exit_state.value).inc()
            created, started = iso_to_epoch(record.created_at), iso_to_epoch(record.started_at)
            if created is not None and started is not None:
                self.spawn_latency.observe(max(0.0, started - created))
            requested, completed = iso_to_epoch(record.stop_requested_at), iso_to_epoch(record.completed_at)
            if requested is not None and completed is not None:
                self.stop_latency.observe(max(0.0, completed - requested))

    def render(self, counts: dict[str, int], queue_length: int, registry_size: int) -> bytes:
        for state, count in counts.items():
            self.processes.labels(state).set(count)
        self.queue_length.set(queue_length)
        self.registry_size.set(registry_size)
        return generate_latest(self.registry)
