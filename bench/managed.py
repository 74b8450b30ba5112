"""B9 (issue 19): what health checks on managed processes cost the daemon.

Issue 19: "200 managed processes checked every second cost the daemon under 5%
of a core (in the benchmark)", and health checks never block the event loop.

A small TCP listener runs in the bench process (asyncio, 127.0.0.1, an
ephemeral port; it accepts and closes, and counts what it accepted). One daemon
on a fresh state dir, started by the harness, is measured twice over windows of
the same length (10 s; 3 s with ``--quick``):

* **floor**: N unmanaged ``sleep 600`` (started over the API as B1 starts
  them): what the daemon costs holding N children and doing nothing;
* **managed**: N managed ``sleep 600`` (``POST /processes`` with ``name``
  ``b9-<i>`` and ``healthCheck`` ``{"type": "tcp", "port": <the listener>,
  "initialDelayMs": 0, "intervalMs": 1000}``), measured once every one reports
  ``managed.healthStatus == "healthy"``.

The cost is the daemon process's CPU time over the window, ``utime + stime``
from ``/proc/<pid>/stat`` (every thread of it, in clock ticks), divided by the
window's wall time: a fraction of one core. The target, < 5% of a core, is on
the managed figure itself, not on its difference from the floor (both are
reported, with the difference). The keeper's CPU over the same windows is
reported beside it (it holds the children; the probes are the daemon's own).

Meanwhile a client on its own connection asks ``GET /healthz`` every 100 ms,
in both windows alike (so both pay the same for it); the p99 of those round
trips in the managed window says whether the loop stayed responsive while the
probes ran (the floor's p99 is its reference). The listener's accepts during
the managed window are counted too: about N per second shows the checks really
ran at the interval asked for.

Each window starts SETTLE seconds after the last request of the set-up, so the
starts, the polling for health and their log lines are not counted. At the
end every process is killed over the API (a kill ends a managed process for
good) and waited for until idle and gone from /proc, then the daemon is stopped
(the harness makes sure its keeper goes too) and the listener closed.

A revision without managed processes answers the first managed start with no
``managed`` in the record (or an error): B9 then reports it unsupported
instead of failing the run, so ``bench.ab`` can still compare the rest.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import CLIENTS, Daemon, alive, percentile, pool, sample_healthz
from bench.workloads import kill_and_wait

HEALTHZ_EVERY = 0.1    # seconds between two /healthz requests
SETTLE = 1.0           # seconds between the last set-up request and a window's start
POLL = 0.25            # seconds between two rounds of polling for health
TARGET = 0.05          # of one core, with the checks running
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of a process (all its threads), from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    return sum(cpu_times(pid))


class Listener:
    """A TCP listener on 127.0.0.1 that accepts, closes and counts: what the probes connect to."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


async def window(daemon: Daemon, seconds: float, listener: Listener) -> dict[str, Any]:
    """The daemon's (and its keeper's) CPU over ``seconds``, /healthz sampled every 100 ms."""
    assert daemon.proc is not None
    keeper_pid = daemon.keeper_pid()
    await asyncio.sleep(SETTLE)
    done = asyncio.Event()
    latencies: list[float] = []
    async with aiohttp.ClientSession() as health:
        accepted = listener.accepted
        keeper_before = cpu_seconds(keeper_pid) if keeper_pid else 0.0
        before, began = cpu_times(daemon.proc.pid), time.perf_counter()
        sampler = asyncio.ensure_future(sample_healthz(health, daemon.url, done, latencies, HEALTHZ_EVERY))
        try:
            await asyncio.sleep(seconds)
        finally:
            after = cpu_times(daemon.proc.pid)
            wall = time.perf_counter() - began
            keeper_cpu = cpu_seconds(keeper_pid) - keeper_before if keeper_pid else None
            accepted = listener.accepted - accepted
            done.set()
            await sampler
    user, system = after[0] - before[0], after[1] - before[1]
    return {"cpu_s": user + system, "user_s": user, "sys_s": system, "wall_s": wall,
            "core": (user + system) / wall,
            "keeper_core": None if keeper_cpu is None else keeper_cpu / wall,
            "accepted": accepted, "healthz_n": len(latencies),
            "healthz_p50_ms": percentile(latencies, 0.5), "healthz_p99_ms": percentile(latencies, 0.99),
            "healthz_max_ms": max(latencies, default=0.0)}


class Unsupported(Exception):
    """This revision's daemon does not run managed processes as B9 asks."""


async def _start(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url + "/processes", json=body) as response:
        if response.status != 201:
            raise Unsupported(f"POST /processes answered {response.status}: {(await response.text())[:200]}")
        record: dict[str, Any] = await response.json()
        return record


async def _all_healthy(session: aiohttp.ClientSession, url: str, records: list[dict[str, Any]],
                       timeout: float) -> list[dict[str, Any]]:
    """Poll until every record's ``managed.healthStatus`` is ``healthy``; their latest records."""
    latest = {r["id"]: r for r in records}
    waiting = set(latest)
    deadline = time.monotonic() + timeout

    async def get(process_id: int) -> dict[str, Any]:
        async with session.get(f"{url}/processes/{process_id}") as response:
            record: dict[str, Any] = await response.json()
            return record
    while waiting:
        for record in await pool(sorted(waiting), get):
            latest[record["id"]] = record
            if (record.get("managed") or {}).get("healthStatus") == "healthy":
                waiting.discard(record["id"])
        if not waiting:
            break
        if time.monotonic() > deadline:
            sample = latest[min(waiting)]
            raise RuntimeError(f"B9: {len(waiting)} managed processes not healthy after {timeout}s,"
                               f" e.g. {sample}")
        await asyncio.sleep(POLL)
    return list(latest.values())


async def _kill_all(session: aiohttp.ClientSession, url: str, records: list[dict[str, Any]]) -> None:
    """Kill each over the API until idle, then until its pid is gone from /proc."""
    await pool([r["id"] for r in records], lambda process_id: kill_and_wait(session, url, process_id))
    deadline = time.monotonic() + 30
    while any(r.get("pid") and alive(r["pid"]) for r in records):
        if time.monotonic() > deadline:
            raise RuntimeError("B9: killed processes still in /proc after 30 s")
        await asyncio.sleep(0.01)


async def b9(workdir: Path, n: int, seconds: float) -> dict[str, Any]:
    """The floor (n unmanaged sleeps), then n managed sleeps with a TCP check every second."""
    result: dict[str, Any] = {"n": n, "seconds": seconds}
    daemon = Daemon(workdir / "b9")
    async with Listener() as listener:
        daemon.start()
        try:
            connector = aiohttp.TCPConnector(limit=CLIENTS * 2)
            async with aiohttp.ClientSession(connector=connector) as session:
                plain = await pool(list(range(n)), lambda _: _start(session, daemon.url,
                                                                    {"argv": ["sleep", "600"]}))
                try:
                    result["floor"] = await window(daemon, seconds, listener)
                finally:
                    await _kill_all(session, daemon.url, plain)
                check = {"type": "tcp", "port": listener.port, "initialDelayMs": 0, "intervalMs": 1000}
                managed: list[dict[str, Any]] = []
                try:
                    first = await _start(session, daemon.url, {"argv": ["sleep", "600"], "name": "b9-0",
                                                               "healthCheck": check})
                    managed.append(first)
                    if not isinstance(first.get("managed"), dict):
                        raise Unsupported("a start with healthCheck gave a record without 'managed'")
                    managed += await pool(list(range(1, n)), lambda i: _start(
                        session, daemon.url, {"argv": ["sleep", "600"], "name": f"b9-{i}",
                                              "healthCheck": check}))
                    began = time.perf_counter()
                    managed = await _all_healthy(session, daemon.url, managed, 60 + n * 0.1)
                    result["healthy_after_s"] = time.perf_counter() - began
                    result["managed"] = await window(daemon, seconds, listener)
                except Unsupported as exc:
                    result["unsupported"] = str(exc)
                finally:
                    await _kill_all(session, daemon.url, managed)
        finally:
            daemon.stop()
    return result


def report_rows(r: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    n, floor = r["n"], r["floor"]
    work = f"{n} managed sleeps, TCP check every 1 s: daemon CPU; /healthz p99"
    if "unsupported" in r:
        return ([("B9", work, "not supported", f"unmanaged {floor['core']:.1%} of a core", "",
                  "< 5% of a core")], [f"B9: this revision has no managed processes ({r['unsupported']})"])
    managed = r["managed"]
    rows: list[tuple[str, ...]] = [
        ("B9", work, f"{managed['core']:.1%} of a core; p99 {managed['healthz_p99_ms']:.1f} ms",
         f"{n} unmanaged {floor['core']:.1%}; p99 {floor['healthz_p99_ms']:.1f} ms",
         f"+{managed['core'] - floor['core']:.1%} of a core", "< 5% of a core")]

    def keeper(part: dict[str, Any]) -> str:
        return "none" if part["keeper_core"] is None else f"{part['keeper_core']:.2%}"
    lines = [f"B9: windows of {managed['wall_s']:.1f} s each; daemon CPU (user + sys)"
             f" {managed['user_s']:.2f} + {managed['sys_s']:.2f} s managed,"
             f" {floor['user_s']:.2f} + {floor['sys_s']:.2f} s unmanaged;"
             f" keeper {keeper(managed)} / {keeper(floor)} of a core;"
             f" all {n} healthy {r['healthy_after_s']:.1f} s after the last start;"
             f" {managed['accepted']} probe connections in the window ({n * managed['wall_s']:.0f} expected);"
             f" /healthz {managed['healthz_n']} / {floor['healthz_n']} samples, max"
             f" {managed['healthz_max_ms']:.1f} / {floor['healthz_max_ms']:.1f} ms"]
    return rows, lines
