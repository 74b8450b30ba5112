"""The raw limit, measured in its own process: asyncio spawn/kill with a pidfd watcher.

This is what a supervisor with no registry, no HTTP and no bookkeeping could
do on this machine: ``python -m bench.raw N CHURN`` prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time


def _spawn(argv: list[str]) -> int:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    proc.returncode = 0  # we reap it ourselves below
    return proc.pid


async def _exit_of(loop: asyncio.AbstractEventLoop, pid: int, fd: int) -> None:
    done = loop.create_future()
    loop.add_reader(fd, lambda: None if done.done() else done.set_result(None))
    await done
    loop.remove_reader(fd)
    os.close(fd)
    os.waitpid(pid, 0)


async def measure(n: int, churn: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    children = []
    for _ in range(n):
        pid = _spawn(["sleep", "600"])
        children.append((pid, os.pidfd_open(pid)))
    spawn_ms = (time.perf_counter() - began) * 1000
    began = time.perf_counter()
    waits = [asyncio.ensure_future(_exit_of(loop, pid, fd)) for pid, fd in children]
    for _pid, fd in children:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
    await asyncio.gather(*waits)
    kill_ms = (time.perf_counter() - began) * 1000
    began = time.perf_counter()
    for _ in range(churn):
        pid = _spawn(["true"])
        await _exit_of(loop, pid, os.pidfd_open(pid))
    churn_rate = churn / (time.perf_counter() - began)
    return {"spawn_ms": spawn_ms, "kill_ms": kill_ms, "churn_per_s": churn_rate}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(int(sys.argv[1]), int(sys.argv[2])))))
