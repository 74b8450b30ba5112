"""B7's keeper part (issue 17): the keeper's idle RSS, and what one child costs it.

The keeper is the parent of every child and holds their pipes, so its cost per
child is memory and file descriptors. The fds are counted in
``/proc/<keeper>/fd`` before and after N children and named by ``readlink``
(a pipe, the pidfd, the output file and its arrival index...), so the report
says exactly which fds a child needs, not only how many.

Where the daemon runs a keeper (``<state_dir>/keeper.lock`` names it), B7's
own children, started through the HTTP API with their default stdio, are the
ones counted. A revision whose daemon does not start a keeper yet, but has one,
gets a keeper started here (``python -m daemon keeper``) and fed the same
children over its protocol, with the helpers of ``tests/keeper/measure.py``
(which also measures the other stdio modes and the capture rate). A revision
without a keeper reports none.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import footprint

SETTLE = 0.5   # seconds for the keeper to finish the work of the last request before it is measured


def fd_names(pid: int, state_dir: Path) -> Counter[str]:
    """The open fds of ``pid``, each named by readlink with ids and inode numbers left out."""
    names: Counter[str] = Counter()
    prefix = f"{state_dir}{os.sep}"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue   # closed meanwhile
        names[_name(link, prefix)] += 1
    return names


def _name(link: str, prefix: str) -> str:
    if link.startswith(prefix):
        # output/17.stdout.idx -> output/<id>.stdout.idx
        return re.sub(r"(^|/)\d+\.", r"\1<id>.", link[len(prefix):])
    if link.startswith("anon_inode:"):
        return link.removeprefix("anon_inode:")     # [pidfd], [eventpoll], ...
    return re.sub(r":\[\d+\]$", "", link)           # pipe, socket


def per_child(before: Counter[str], after: Counter[str], children: int) -> dict[str, float]:
    """Fds added per child, by name (only those whose count grew)."""
    return {name: round((after[name] - before[name]) / children, 2)
            for name in sorted(after) if after[name] > before[name]}


def describe(fds: dict[str, float]) -> str:
    return ", ".join(f"{count:g} {name}" for name, count in fds.items()) or "none"


class KeeperProbe:
    """Footprints of one keeper process, taken at the moments B7 chooses."""

    def __init__(self, pid: int, state_dir: Path) -> None:
        self.pid = pid
        self.state_dir = state_dir
        self.marks: dict[str, tuple[dict[str, int], Counter[str]]] = {}

    async def mark(self, label: str) -> None:
        await asyncio.sleep(SETTLE)
        self.marks[label] = (footprint(self.pid), fd_names(self.pid, self.state_dir))

    def result(self, children: int, how: str) -> dict[str, Any]:
        idle, idle_fds = self.marks["idle"]
        before, before_fds = self.marks["before"]
        loaded, loaded_fds = self.marks["loaded"]
        return {"how": how, "pid": self.pid, "children": children, "idle": idle,
                "idle_fds": dict(sorted(idle_fds.items())), "before": before, "loaded": loaded,
                "rss_kib_per_child": (loaded["rss_kib"] - before["rss_kib"]) / children,
                "fds_per_child": (loaded["fds"] - before["fds"]) / children,
                "fd_names_per_child": per_child(before_fds, loaded_fds, children)}


async def own_keeper(workdir: Path, children: int) -> dict[str, Any] | None:
    """Start a keeper here and give it ``children`` sleeps (default stdio) over its protocol.

    For revisions whose daemon does not start the keeper; None if there is no keeper.
    """
    try:
        from daemon.keeper.client import KeeperClient
        from tests.keeper.measure import ENV
    except ImportError:
        return None
    state = workdir / "keeper-state"
    (state / "keeper").mkdir(mode=0o700, parents=True)
    with open(state / "keeper" / "keeper.log", "ab") as log:   # where the daemon has it write
        keeper = subprocess.Popen([sys.executable, "-m", "daemon", "keeper", "--state-dir", str(state)],
                                  stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not (state / "keeper.sock").exists():
            if keeper.poll() is not None or time.monotonic() > deadline:
                log_text = (state / "keeper" / "keeper.log").read_text()
                raise RuntimeError(f"the keeper did not start: {log_text}")
            await asyncio.sleep(0.01)
        client = await KeeperClient.connect(str(state))
        probe = KeeperProbe(keeper.pid, state)
        await probe.mark("idle")
        await probe.mark("before")
        ids = list(range(1, children + 1))
        for i in ids:
            await client.spawn(i, ["sleep", "600"], ENV)
        await probe.mark("loaded")
        for i in ids:
            await client.signal(i, signal.SIGKILL)
        while len((await client.list()).exits) < children:
            await asyncio.sleep(0.05)
        await client.ack(ids)
        await client.close()
        return probe.result(children, "a keeper started by the benchmark (the daemon has none)")
    finally:
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(60)


def report_rows(k: dict[str, Any] | None) -> tuple[list[tuple[str, ...]], list[str]]:
    """B7k's table row and the line naming the fds one child costs the keeper."""
    if k is None:
        return [("B7k", "keeper: idle RSS; per child", "no keeper in this revision", "", "", "")], []
    idle = k["idle"]
    row = ("B7k", f"keeper: idle RSS / fds; then per child, {k['children']} children",
           f"{idle['rss_kib'] / 1024:.1f} MiB / {idle['fds']} fds",
           f"+{k['rss_kib_per_child']:.2f} KiB, +{k['fds_per_child']:.2f} fd per child", "",
           "<= 15 MiB; <= 10 KiB; only the fds it needs")
    lines = [f"keeper ({k['how']}): fds per child: {describe(k['fd_names_per_child'])};"
             f" idle: {describe({n: float(c) for n, c in k['idle_fds'].items()})}"]
    return [row], lines
