"""``python -m bench [--quick] [--cases B1,B4] [--b8-bytes 1G]``: drive a real daemon over
loopback HTTP, as a client would.

Every figure is printed beside the raw limit measured in the same run (asyncio
spawn/kill of the same children with a pidfd watcher, in a separate process;
a bare aiohttp handler for request rates; ``head -c N > file`` for capture;
the same daemon with unmanaged children for B9's health checks).
``--quick`` shrinks every size so the smoke test can run it in seconds; its
figures mean nothing. ``--cases`` runs only the workloads named (and the floors
they are read against); ``python -m bench.ab`` uses it to compare two revisions.

The daemon is ``python -m daemon`` from the current directory (see bench.harness).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench import capture, keeper, managed, report, workloads
from bench.harness import CLIENTS, Daemon, free_port, pool, timed, wait_http
from bench.sizes import CASES, QUICK, Sizes, parse_bytes, parse_cases

_NEEDS_RAW = {"B1", "B2", "B4"}
_NEEDS_DAEMON = {"B1", "B2", "B3", "B4", "B5", "B6", "B7"}


async def floors(sizes: Sizes, cases: frozenset[str], results: dict[str, Any]) -> None:
    """The raw limit and the bare handler, for the cases that are read against them."""
    if cases & _NEEDS_RAW:
        results["raw"] = json.loads(subprocess.run(
            [sys.executable, "-m", "bench.raw", str(sizes.children), str(sizes.raw_churn)],
            capture_output=True, text=True, check=True).stdout)
    if not cases & {"B2", "B3", "B5"}:
        return
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare", str(bare_port)])
    try:
        wait_http(f"http://127.0.0.1:{bare_port}/processes/1", bare)
        if "B5" in cases:
            results["bare_rate"] = await workloads.read_rate(f"http://127.0.0.1:{bare_port}", "/processes/1",
                                                             sizes.read_seconds)
        if cases & {"B2", "B3"}:
            results["floor_b2_ms"], results["floor_rtt_ms"] = await workloads.http_floor(
                f"http://127.0.0.1:{bare_port}", sizes.children, sizes.rounds)
    finally:
        bare.terminate()
        bare.wait()


async def bench(sizes: Sizes, workdir: Path, cases: frozenset[str] = frozenset(CASES)) -> dict[str, Any]:
    results: dict[str, Any] = {}
    await floors(sizes, cases, results)
    daemon = Daemon(workdir / "state")
    daemon.state_dir.mkdir(mode=0o700)
    results["file_create_us"] = workloads.file_create_us(workdir / "state" / "probe")
    if cases & _NEEDS_DAEMON:
        daemon.start()
    try:
        if cases & (_NEEDS_DAEMON - {"B6"}):
            await on_one_daemon(daemon, sizes, cases, results, workdir)
        if "B6" in cases:
            daemon.stop()
            workloads.fill_registry(daemon.state_dir / "stablehand.db", sizes.records)
            results["b6_startup_s"] = daemon.start()
            workloads.wait_spares(daemon.state_dir)
            async with aiohttp.ClientSession() as session:
                results["b6_list_ms"] = await timed(session, "GET", daemon.url + "/processes?limit=100", 20)
                results["b6_create_ms"], results["empty_create_ms"] = await workloads.creates_beside_empty(
                    session, daemon, workdir / "empty")
    finally:
        daemon.stop()
    if "B9" in cases:   # before B8: its gigabyte's writeback must not land in B9's windows
        results["b9"] = await managed.b9(workdir, sizes.managed, sizes.managed_seconds)
    if "B8" in cases:
        results["b8"] = await capture.b8(workdir, sizes.capture_bytes, sizes.capture_cap)
    return results


async def on_one_daemon(daemon: Daemon, sizes: Sizes, cases: frozenset[str], results: dict[str, Any],
                        workdir: Path) -> None:
    """B1-B5 and B7, one after the other on one daemon (B6 needs it restarted)."""
    workloads.wait_spares(daemon.state_dir)
    connector = aiohttp.TCPConnector(limit=CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        await timed(session, "POST", daemon.url + "/processes", 5, json={"argv": ["true"]})  # warm-up
        idle = daemon.footprint()
        keeper_pid = daemon.keeper_pid() if "B7" in cases else None
        probe = keeper.KeeperProbe(keeper_pid, daemon.state_dir) if keeper_pid else None
        if probe:
            await probe.mark("idle")
        if cases & {"B1", "B2"}:
            b1, b2 = [], []
            for _ in range(sizes.rounds):
                start_ms, kill_ms = await workloads.start_and_kill(session, daemon.url, sizes.children)
                b1.append(start_ms)
                b2.append(kill_ms)
            results["b1_ms"], results["b2_ms"] = statistics.median(b1), statistics.median(b2)
        if "B3" in cases:
            latencies = sorted(await workloads.kill_latency(session, daemon.url, sizes.latency_reps))
            results["b3_p50_ms"] = latencies[len(latencies) // 2]
            results["b3_p99_ms"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if "B4" in cases:
            results["b4_per_s"] = await workloads.churn(session, daemon.url, sizes.churn)
        if "B5" in cases:
            # Once the spare output files B1-B4 used up are made again (revisions that keep spares).
            await asyncio.to_thread(workloads.wait_spares, daemon.state_dir)
            results.update(await workloads.read_rates(session, daemon, sizes.read_seconds))
        if "B7" in cases:
            async def start_sleep(_: int) -> dict[str, Any]:
                async with session.post(daemon.url + "/processes", json={"argv": ["sleep", "600"]}) as r:
                    record: dict[str, Any] = await r.json()
                    return record
            before = daemon.footprint()  # same client connections open as when loaded
            if probe:
                await probe.mark("before")
            many = await pool(list(range(sizes.memory_children)), start_sleep)
            loaded = daemon.footprint()
            if probe:
                await probe.mark("loaded")
            await pool(many, lambda r: workloads.kill_and_wait(session, daemon.url, r["id"]))
            results["b7"] = {"idle": idle, "before": before, "loaded": loaded,
                             "children": sizes.memory_children}
            results["b7_keeper"] = (probe.result(sizes.memory_children, "the daemon's keeper, B7's children")
                                    if probe else await keeper.own_keeper(workdir, sizes.memory_children))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); figures mean nothing")
    parser.add_argument("--cases", default="all", metavar="B1,B4,...",
                        help=f"the workloads to run (default: all of {','.join(CASES)})")
    parser.add_argument("--b8-bytes", metavar="SIZE",
                        help="what B8's child writes (default 1G; 16M with --quick)")
    parser.add_argument("--dir", metavar="DIR",
                        help="where the state dirs go (default: a temp dir in $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--json-out", metavar="FILE", help="write the raw figures as JSON to FILE")
    args = parser.parse_args(argv)
    try:
        cases = parse_cases(args.cases)
        sizes = QUICK if args.quick else Sizes()
        if args.b8_bytes:
            sizes = dataclasses.replace(sizes, capture_bytes=parse_bytes(args.b8_bytes))
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="stablehand-bench-", dir=args.dir) as workdir:
        results = asyncio.run(bench(sizes, Path(workdir), cases))
    results["cases"] = sorted(cases)
    results["sizes"] = dataclasses.asdict(sizes)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {os.uname().release}")
    print(report.report(results, sizes, cases))
    if args.json:
        print(json.dumps(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results))
    return 0
