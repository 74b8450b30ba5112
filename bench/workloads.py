"""B1-B6's workloads, and the floors they are read against (moved here from run.py as they were).

Each is what a client does over loopback HTTP; the floors are the same
requests answered by a bare aiohttp handler (``bench/bare.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import CLIENTS, Daemon, alive, pool, timed


async def start_and_kill(session: aiohttp.ClientSession, url: str, n: int) -> tuple[float, float]:
    """B1 and B2: start n sleeps until all running; kill them until all idle and gone."""
    async def start(_: int) -> dict[str, Any]:
        async with session.post(url + "/processes", json={"argv": ["sleep", "600"]}) as response:
            assert response.status == 201, await response.text()
            record: dict[str, Any] = await response.json()
            return record
    began = time.perf_counter()
    records = await pool(list(range(n)), start)
    start_ms = (time.perf_counter() - began) * 1000
    assert all(r["state"] == "running" and r["pid"] for r in records)

    began = time.perf_counter()
    await pool([r["id"] for r in records], lambda process_id: kill_and_wait(session, url, process_id))
    while any(alive(r["pid"]) for r in records):
        await asyncio.sleep(0.001)
    return start_ms, (time.perf_counter() - began) * 1000


async def kill_and_wait(session: aiohttp.ClientSession, url: str, process_id: int) -> None:
    """What a client does in B2: kill, then wait until the record is idle."""
    async with session.post(f"{url}/processes/{process_id}/signals/kill", json={}) as response:
        assert response.status == 200
    async with session.get(f"{url}/processes/{process_id}/wait?timeout=60") as response:
        assert response.status == 200


async def http_floor(url: str, n: int, rounds: int) -> tuple[float, float]:
    """The HTTP alone, against the bare handler: B2's requests (kill and wait for n ids,
    16 clients; median of rounds) in ms, and one round trip's median in ms (B3 makes two).

    B2 and B3 have targets in milliseconds, and on this VM the same requests answered by
    a handler doing nothing take two to three times longer on some days than on others.
    """
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS * 2)) as session:
        await timed(session, "GET", url + "/processes/1", 5)  # warm-up
        samples = []
        for _ in range(rounds):
            began = time.perf_counter()
            await pool(list(range(1, n + 1)), lambda i: kill_and_wait(session, url, i))
            samples.append((time.perf_counter() - began) * 1000)
        return statistics.median(samples), await timed(session, "GET", url + "/processes/1", 200)


async def kill_latency(session: aiohttp.ClientSession, url: str, reps: int) -> list[float]:
    """B3: one kill → idle seen by a client already waiting on /wait."""
    samples = []
    for _ in range(reps):
        async with session.post(url + "/processes", json={"argv": ["sleep", "600"]}) as response:
            record = await response.json()
        waiter = asyncio.ensure_future(session.get(f"{url}/processes/{record['id']}/wait?timeout=60"))
        await asyncio.sleep(0.005)  # the wait request is in place
        began = time.perf_counter()
        async with session.post(f"{url}/processes/{record['id']}/signals/kill", json={}):
            pass
        response = await waiter
        await response.read()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def churn(session: aiohttp.ClientSession, url: str, n: int) -> float:
    """B4: n × true, start → idle, 16 clients; returns processes per second."""
    async def one(_: int) -> None:
        async with session.post(url + "/processes", json={"argv": ["true"]}) as response:
            record = await response.json()
        async with session.get(f"{url}/processes/{record['id']}/wait?timeout=60") as response:
            assert (await response.json())["state"] == "idle"
    began = time.perf_counter()
    await pool(list(range(n)), one)
    return n / (time.perf_counter() - began)


async def read_rate(url: str, path: str, seconds: float) -> float:
    """B5: GET rate with 16 keep-alive clients."""
    count = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:
        async def client() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with session.get(url + path) as response:
                    await response.read()
                    count += 1
        began = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(CLIENTS)])
        return count / (time.perf_counter() - began)


async def scrape(session: aiohttp.ClientSession, url: str, seconds: float) -> int:
    """A Prometheus scraper pulling /metrics every 100 ms (far more often than usual)."""
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        async with session.get(url + "/metrics") as response:
            await response.read()
            count += 1
        await asyncio.sleep(0.1)
    return count


async def scrape_cpu_ms(session: aiohttp.ClientSession, daemon: Daemon, n: int = 50) -> float:
    """The daemon's CPU per /metrics scrape, from its threads' own accounting.

    B5+ compares request rates, which on a shared 2-core VM swing by a third
    from one second to the next; this is the cost itself, free of that noise.
    """
    before = daemon.cpu_ns()
    for _ in range(n):
        async with session.get(daemon.url + "/metrics") as response:
            await response.read()
    return (daemon.cpu_ns() - before) / n / 1e6


async def read_rates(session: aiohttp.ClientSession, daemon: Daemon, seconds: float) -> dict[str, float]:
    """B5 and B5+, alternating in short slices (medians of each), so a drift of the
    machine during the run cannot pass for the scraper's cost."""
    slices = max(1, int(seconds))
    plain, scraped, scrapes = [], [], 0
    for _ in range(slices):
        plain.append(await read_rate(daemon.url, "/processes/1", seconds / slices))
        scraper = asyncio.ensure_future(scrape(session, daemon.url, seconds / slices))
        scraped.append(await read_rate(daemon.url, "/processes/1", seconds / slices))
        scrapes += await scraper
    return {"b5_per_s": statistics.median(plain), "b5_scraped_per_s": statistics.median(scraped),
            "scrapes": scrapes, "scrape_cpu_ms": await scrape_cpu_ms(session, daemon)}


def file_create_us(directory: Path, n: int = 200) -> float:
    """Median cost of creating one empty file in ``directory`` (then removed).

    A start needs two files (its stdout and stderr). What an inode costs depends
    on the filesystem and how full the directory's block group is: 10 us to 1 ms
    on the same disk. Printed so B1 and B4 can be read.
    """
    directory.mkdir()
    samples = []
    for i in range(n):
        began = time.perf_counter()
        os.close(os.open(directory / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        samples.append((time.perf_counter() - began) * 1e6)
    for i in range(n):
        os.unlink(directory / str(i))
    directory.rmdir()
    return statistics.median(samples)


def wait_spares(state_dir: Path, timeout: float = 30) -> None:
    """Until the daemon's start-up work is done: its spare output files are all made.

    Revisions before the keeper (issue 17) keep spare output files, made on a
    thread while the daemon is quiet; B5 and B6 start once that is done (that
    background work landing in some slices and not others swung B5+ from 74% to
    110% of B5). With the keeper there are no spares: nothing to wait for.
    """
    try:
        from daemon.output import SPARES  # type: ignore[attr-defined]
    except ImportError:
        return
    deadline = time.monotonic() + timeout
    spare_dir = state_dir / "output" / ".spare"
    while sum(len(files) for _, _, files in os.walk(spare_dir)) < 2 * SPARES:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def fill_registry(db: Path, n: int) -> None:
    """B6: n idle records written straight into the registry (as years of use would)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        now = "2026-01-01T00:00:00.000Z"
        conn.executemany(
            "INSERT INTO processes (state, exit_state, created_at, completed_at, argv, env, pid) "
            "VALUES ('idle', 'success', ?, ?, '[\"true\"]', '{}', ?)",
            ((now, now, 1000 + i % 30000) for i in range(n)))


async def creates_beside_empty(session: aiohttp.ClientSession, full: Daemon,
                               empty_dir: Path, reps: int = 20) -> tuple[float, float]:
    """B6's create: medians on ``full`` and on a fresh, empty daemon, alternating.

    Both daemons run at once and take turns, one create each, so a drift of the
    machine during the run falls on both alike (the two medians used to be taken
    20 s apart and swung 0.6-1.3x between runs).
    """
    empty = Daemon(empty_dir)
    empty.start()
    try:
        wait_spares(empty_dir)
        body = {"argv": ["true"]}
        for daemon in (full, empty):
            await timed(session, "POST", daemon.url + "/processes", 5, json=body)  # warm-up
        on_full, on_empty = [], []
        for _ in range(reps):
            on_empty.append(await timed(session, "POST", empty.url + "/processes", 1, json=body))
            on_full.append(await timed(session, "POST", full.url + "/processes", 1, json=body))
        return statistics.median(on_full), statistics.median(on_empty)
    finally:
        empty.stop()
