"""Prometheus metrics, one set per daemon, rendered by a small writer of our own.

Counters and histograms are fed from the supervisor's committed state changes
(a listener, so the hot path pays one dict lookup), HTTP counts from a
middleware; gauges that describe the present (processes by state, queue
length, registry size) are read when /metrics is scraped.

Why not prometheus-client: it cost the serving process about 1 MiB of RSS
(its import pulls in http.server, wsgiref, gzip, mmap...), for eight metrics
whose text is a few lines of string formatting (issue 21). The text is
byte for byte what ``prometheus_client.generate_latest`` 0.26 wrote for the
same metrics, which the tests check with its own parser: the same content type
(text format 1.0.0), HELP and TYPE lines, ``_total`` counters, ``_created``
series (omitted when ``PROMETHEUS_DISABLE_CREATED_SERIES`` is true, as it
does), cumulative ``le`` buckets, and floats written as Go writes them. Every
call comes from the event loop's thread, so nothing is locked.
"""

from __future__ import annotations

import math
import os
import time

from .model import Process, State, iso_to_epoch

CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"   # of what render() returns
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CREATED_SERIES = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() \
    not in ("true", "1", "t")

Labels = tuple[tuple[str, str], ...]


def go_float(value: float) -> str:
    """A float as Go's strconv writes it (prometheus-client's ``floatToGoString``)."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:   # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {go_float(value)}\n"
    inner = ",".join(f'{key}="{_escape(text)}"' for key, text in sorted(labels))
    return f"{name}{{{inner}}} {go_float(value)}\n"


def _header(name: str, kind: str, documentation: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


class Gauge:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.values: dict[Labels, float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, *labelvalues: str) -> None:
        self.values[tuple(zip(self.labelnames, labelvalues, strict=True))] = float(value)

    def render(self, out: list[str]) -> None:
        out.append(_header(self.name, "gauge", self.documentation))
        out.extend(_sample(self.name, labels, value) for labels, value in self.values.items())


class Counter:
    """A counter; each label set is a ``[value, created]`` pair, made on its first count."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.children: dict[Labels, list[float]] = {} if labelnames else {(): [0.0, time.time()]}

    def labels(self, *labelvalues: str) -> list[float]:
        key = tuple(zip(self.labelnames, labelvalues, strict=True))
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = [0.0, time.time()]
        return child

    def inc(self, *labelvalues: str) -> None:
        self.labels(*labelvalues)[0] += 1.0

    def render(self, out: list[str]) -> None:
        total = self.name + "_total"
        out.append(_header(total, "counter", self.documentation))
        out.extend(_sample(total, labels, child[0]) for labels, child in self.children.items())
        if CREATED_SERIES and self.children:
            created = self.name + "_created"
            out.append(_header(created, "gauge", self.documentation))
            out.extend(_sample(created, labels, child[1]) for labels, child in self.children.items())


class Histogram:
    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = [float(bound) for bound in buckets] + [math.inf]
        self.les = [go_float(bound) for bound in self.bounds]
        self.counts = [0.0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        for i, bound in enumerate(self.bounds):
            if amount <= bound:
                self.counts[i] += 1.0
                break

    def render(self, out: list[str]) -> None:
        out.append(_header(self.name, "histogram", self.documentation))
        cumulative = 0.0
        for le, count in zip(self.les, self.counts, strict=True):
            cumulative += count
            out.append(_sample(self.name + "_bucket", (("le", le),), cumulative))
        out.append(_sample(self.name + "_count", (), cumulative))
        out.append(_sample(self.name + "_sum", (), self.sum))
        if CREATED_SERIES:
            out.append(_header(self.name + "_created", "gauge", self.documentation))
            out.append(_sample(self.name + "_created", (), self.created))


class Metrics:
    def __init__(self) -> None:
        self.processes = Gauge("stablehand_processes", "Processes by state", ("state",))
        self.queue_length = Gauge("stablehand_queue_length", "Processes waiting for a slot")
        self.registry_size = Gauge("stablehand_registry_records", "Records in the registry")
        self.started = Counter("stablehand_processes_started", "Processes that reached running")
        self.exited = Counter("stablehand_processes_exited", "Processes that became idle, by exit state",
                              ("exit_state",))
        self.spawn_latency = Histogram("stablehand_spawn_to_running_seconds",
                                       "From creation to the child running", LATENCY_BUCKETS)
        self.stop_latency = Histogram("stablehand_kill_to_idle_seconds",
                                      "From a kill/stop/timeout to the whole tree gone", LATENCY_BUCKETS)
        self.http_requests = Counter("stablehand_http_requests", "HTTP requests by route and status",
                                     ("method", "route", "status"))
        # In the order they are written out (prometheus-client's: the order of registration).
        self._all: tuple[Gauge | Counter | Histogram, ...] = (
            self.processes, self.queue_length, self.registry_size, self.started, self.exited,
            self.spawn_latency, self.stop_latency, self.http_requests)
        self._request_counters: dict[tuple[str, str, int], list[float]] = {}

    def count_request(self, method: str, route: str, status: int) -> None:
        """One HTTP request. The labelled child is looked up once per (method, route, status)."""
        key = (method, route, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.http_requests.labels(method, route, str(status))
        counter[0] += 1.0

    def observe(self, record: Process) -> None:
        """Listener for committed state changes."""
        if record.state is State.RUNNING:
            self.started.inc()
        elif record.state is State.IDLE and record.exit_state is not None:
            self.exited.inc(record.exit_state.value)
            created, started = iso_to_epoch(record.created_at), iso_to_epoch(record.started_at)
            if created is not None and started is not None:
                self.spawn_latency.observe(max(0.0, started - created))
            requested, completed = iso_to_epoch(record.stop_requested_at), iso_to_epoch(record.completed_at)
            if requested is not None and completed is not None:
                self.stop_latency.observe(max(0.0, completed - requested))

    def render(self, counts: dict[str, int], queue_length: int, registry_size: int) -> bytes:
        for state, count in counts.items():
            self.processes.set(count, state)
        self.queue_length.set(queue_length)
        self.registry_size.set(registry_size)
        out: list[str] = []
        for metric in self._all:
            metric.render(out)
        return "".join(out).encode()
