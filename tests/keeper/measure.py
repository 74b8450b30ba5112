"""Figures for the keeper (not a test): idle RSS, cost per child, capture throughput.

    .venv/bin/python -m tests.keeper.measure [--children 200] [--bytes 1073741824]

Prints one JSON object. Throughput is relative to ``head -c N /dev/zero > file``
measured in the same run and directory; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.keeper.client import KeeperClient

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def kinds(links: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for link in links:
        kind = ("idx file" if link.endswith(".idx") else "output file" if "/output/" in link
                else link.split(":")[0] if ":" in link else link)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def settle(pid: int) -> int:
    await asyncio.sleep(0.5)
    return rss_kib(pid)


async def measure(base: Path, children: int, nbytes: int) -> dict[str, Any]:
    state = base / "state"
    state.mkdir()
    log = (base / "keeper.log").open("wb")
    keeper = subprocess.Popen([sys.executable, "-m", "daemon", "keeper", "--state-dir", str(state)],
                              stderr=log, stdout=subprocess.DEVNULL)
    log.close()
    try:
        while not (state / "keeper.sock").exists():
            await asyncio.sleep(0.01)
        client = await KeeperClient.connect(str(state))
        result: dict[str, Any] = {"idle_rss_kib": await settle(keeper.pid),
                                  "idle_fds": kinds(fds(keeper.pid))}
        before_fds, before_rss = len(fds(keeper.pid)), rss_kib(keeper.pid)
        for mode, kwargs in (("capture+stdin pipe", {"stdin": "pipe"}), ("capture", {}),
                             ("discard", {"stdout": "discard", "stderr": "discard"})):
            ids = range(1, children + 1)
            for i in ids:
                await client.spawn(i, ["sleep", "1000"], ENV, max_output_bytes=64 << 20, **kwargs)
            rss = await settle(keeper.pid)
            links = fds(keeper.pid)
            result[f"per_child[{mode}]"] = {
                "fds": (len(links) - before_fds) / children,
                "fd_kinds_per_child": {k: v / children for k, v in kinds(links).items()
                                       if k not in result["idle_fds"] or v > result["idle_fds"][k]},
                "rss_kib": round((rss - before_rss) / children, 2),
                f"rss_kib_at_{children}": rss}
            for i in ids:
                await client.signal(i, signal.SIGKILL)
            while len((await client.list()).exits) < children:
                await asyncio.sleep(0.05)
            await client.ack(list(ids))
            for i in ids:
                for stream in ("stdout", "stderr"):
                    for suffix in ("", ".idx"):
                        path = state / "output" / f"{i}.{stream}{suffix}"
                        path.unlink(missing_ok=True)
        # Throughput: the same 'head -c N /dev/zero' writing to a file, and captured by the
        # keeper, alternated (the page cache and writeback make whichever runs first differ).
        rates: dict[str, Any] = {}
        for n, (label, cap) in enumerate((("uncapped", None), ("cap 64 MiB", 64 << 20),
                                           ("cap 4 MiB", 4 << 20)), start=1000):
            target = base / "plain.out"
            t0 = time.monotonic()
            subprocess.run(f"head -c {nbytes} /dev/zero > {target}", shell=True, check=True)
            plain = time.monotonic() - t0
            target.unlink()
            rates[f"plain before {label}"] = {"MBps": round(nbytes / plain / 1e6)}
            t0 = time.monotonic()
            await client.spawn(n, ["head", "-c", str(nbytes), "/dev/zero"], ENV,
                               max_output_bytes=cap, stderr="discard")
            async for event in client.exits():
                if event.id == n:
                    break
            took = time.monotonic() - t0
            out = state / "output" / f"{n}.stdout"
            rates[label] = {"MBps": round(nbytes / took / 1e6), "ratio": round(plain / took, 2),
                            "size": out.stat().st_size, "disk": out.stat().st_blocks * 512}
            out.unlink()
        # And `yes` for 3 s under a 4 MiB cap.
        await client.spawn(2000, ["yes"], ENV, max_output_bytes=4 << 20, stderr="discard")
        await asyncio.sleep(3)
        await client.signal(2000, signal.SIGKILL)
        async for event in client.exits():
            if event.id == 2000:
                break
        size = (state / "output" / "2000.stdout").stat().st_size
        rates["yes, cap 4 MiB, 3 s"] = {"MBps": round(size / 3 / 1e6)}
        result["throughput"] = rates
        await client.close()
        return result
    finally:
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--bytes", type=int, default=1 << 30)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir in /tmp)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="keeper-measure", dir=args.dir))
    try:
        print(json.dumps(asyncio.run(measure(base, args.children, args.bytes)), indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
