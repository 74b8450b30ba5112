"""B8 (issue 17): a child writing as fast as it can, captured through the daemon.

Part one: ``head -c N /dev/zero`` started over the HTTP API on a daemon whose
``max_output_bytes`` is above N (2N), so that every byte is kept on disk, as the
floor keeps them: with the default cap (64 MiB) the keeper would free all but
64 MiB as it writes, and the comparison would favour it (less writeback than the
floor; a 256 MiB run measured 209% of the floor that way). The capture rate is
N over the time from the POST until the record is idle and ``output/<id>.stdout``
holds all N bytes (its size: offsets keep their meaning even where the oldest
bytes were dropped). The floor is ``head -c N /dev/zero > file`` in the same
directory, timed just before and just after part one, the mean of the two (the
page cache and writeback favour whichever runs first). Target: at least half
the floor's rate. Meanwhile a client asks ``GET /healthz`` every 10 ms on its
own connection; target p99 < 50 ms.

Part two: the same on a daemon with ``max_output_bytes`` = the cap (4 MiB). A
thread samples the output directory every 100 ms: per stream, ``st_blocks * 512``
of the file plus its ``.idx`` arrival index when there is one. Target: the
largest sample of any stream stays at most cap + 1 MiB. Its rate and /healthz
p99 are reported too.

Each part has a daemon of its own on a fresh state dir: a cap is a daemon setting.
N is ``--b8-bytes`` (default 1 GiB; 16 MiB with ``--quick``, where the 100 ms
samples see little and nothing means anything).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import Daemon, percentile, sample_healthz

HEALTHZ_EVERY = 0.01    # seconds between two /healthz requests
DISK_EVERY = 0.1        # seconds between two samples of the output directory
SLACK = 1 << 20         # the disk bound is cap + this, per stream


def plain_write(directory: Path, nbytes: int) -> float:
    """Seconds for ``head -c nbytes /dev/zero > file`` in ``directory`` (the file is removed)."""
    target = directory / "b8-floor.out"
    began = time.perf_counter()
    subprocess.run(["sh", "-c", 'exec head -c "$1" /dev/zero > "$2"', "sh", str(nbytes), str(target)],
                   check=True)
    took = time.perf_counter() - began
    target.unlink()
    return took


class DiskSampler(threading.Thread):
    """Every DISK_EVERY seconds, the disk use of each stream in an output directory.

    Runs on a thread: a stat can wait behind writeback, and the event loop is
    busy timing /healthz. Streams are keyed ``<id>.<stream>``; a file's ``.idx``
    counts towards its stream.
    """

    def __init__(self, output_dir: Path) -> None:
        super().__init__(daemon=True)
        self.output_dir = output_dir
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(DISK_EVERY)
        self.sample()

    def sample(self) -> None:
        use: dict[str, int] = {}
        try:
            entries = list(os.scandir(self.output_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            stream = entry.name.removesuffix(".idx")
            try:
                use[stream] = use.get(stream, 0) + entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue
        for stream, used in use.items():
            self.peak[stream] = max(self.peak.get(stream, 0), used)
        self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()


async def _idle(session: aiohttp.ClientSession, url: str, process_id: int,
                timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{url}/processes/{process_id}/wait?timeout=30") as response:
            record: dict[str, Any] = await response.json()
        if record["state"] == "idle":
            return record
        if time.monotonic() > deadline:
            raise RuntimeError(f"B8: process {process_id} not idle after {timeout}s: {record}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def capture(daemon: Daemon, nbytes: int, timeout: float = 900) -> dict[str, Any]:
    """One child writing ``nbytes`` to stdout, on a running daemon: rate, /healthz, disk."""
    output = daemon.state_dir / "output"
    disk = DiskSampler(output)
    done = asyncio.Event()
    latencies: list[float] = []
    async with aiohttp.ClientSession() as health, aiohttp.ClientSession() as session:
        disk.start()
        sampler = asyncio.ensure_future(sample_healthz(health, daemon.url, done, latencies, HEALTHZ_EVERY))
        try:
            began = time.perf_counter()
            async with session.post(daemon.url + "/processes",
                                    json={"argv": ["head", "-c", str(nbytes), "/dev/zero"]}) as response:
                assert response.status == 201, await response.text()
                process_id = (await response.json())["id"]
            record = await _idle(session, daemon.url, process_id, timeout)
            stdout = output / f"{process_id}.stdout"
            deadline = time.monotonic() + 30   # the record may be idle before the last bytes land
            while _size(stdout) < nbytes and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            took = time.perf_counter() - began
        finally:
            done.set()
            await sampler
            await asyncio.to_thread(disk.stop)
    return {"seconds": took, "captured": _size(stdout), "exit_state": record.get("exitState"),
            "healthz_p99_ms": percentile(latencies, 0.99), "healthz_max_ms": max(latencies, default=0.0),
            "healthz_n": len(latencies), "disk_peak": disk.peak, "disk_samples": disk.samples}


async def b8(workdir: Path, nbytes: int, cap: int) -> dict[str, Any]:
    floor = [plain_write(workdir, nbytes)]
    parts: dict[str, Any] = {}
    for label, limit in (("kept", 2 * nbytes), ("capped", cap)):
        daemon = Daemon(workdir / f"b8-{label}", {"max_output_bytes": limit})
        daemon.start()
        try:
            parts[label] = await capture(daemon, nbytes)
        finally:
            daemon.stop()
        if label == "kept":
            floor.append(plain_write(workdir, nbytes))
    return {"bytes": nbytes, "cap": cap, "floor_s": sum(floor) / len(floor), "floor_samples": floor,
            **parts}


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def report_rows(r: dict[str, Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    nbytes, cap = r["bytes"], r["cap"]
    kept, capped = r["kept"], r["capped"]
    floor_rate = nbytes / r["floor_s"] / 1e6
    rate = nbytes / kept["seconds"] / 1e6
    peak = max(capped["disk_peak"].values(), default=0)
    rows: list[tuple[str, ...]] = [
        ("B8", f"`head -c {_size_text(nbytes)} /dev/zero` to stdout: capture rate; /healthz p99",
         f"{rate:.0f} MB/s; p99 {kept['healthz_p99_ms']:.1f} ms",
         f"file {floor_rate:.0f} MB/s", f"{rate / floor_rate:.0%} of file", ">= 50%; p99 < 50 ms"),
        ("B8+", f"the same, max_output_bytes {_size_text(cap)}: disk per stream (max of samples)",
         f"{_mib(peak)}; p99 {capped['healthz_p99_ms']:.1f} ms",
         f"cap + 1 MiB = {_mib(cap + SLACK)}", f"{nbytes / capped['seconds'] / 1e6 / floor_rate:.0%} of file",
         "<= cap + 1 MiB; p99 < 50 ms"),
    ]
    per_stream = ", ".join(f"{name} {_mib(used)}" for name, used in sorted(capped["disk_peak"].items()))
    floor_runs = ", ".join(f"{s:.2f}" for s in r["floor_samples"])
    lines = [f"B8 (every byte kept, B8+ capped): /healthz {kept['healthz_n']} / {capped['healthz_n']}"
             " samples,"
             f" max {kept['healthz_max_ms']:.1f} / {capped['healthz_max_ms']:.1f} ms;"
             f" output size {kept['captured']} / {capped['captured']} of {nbytes} bytes;"
             f" exit {kept['exit_state']} / {capped['exit_state']}; B8+ disk peaks ({capped['disk_samples']}"
             f" samples): {per_stream or 'no file seen'}; B8 floor runs {floor_runs} s"]
    return rows, lines
