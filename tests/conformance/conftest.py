"""Fixtures for the conformance suite: the three daemons each seed route's test needs, and
a process Stablehand did not start (with a second thread, whose id no pidfd can open).

Every daemon asks for a bearer token, so 401 is always reachable. ``limited`` has a
bucket of one token that refills in 1000 s: its second mutating request is a 429.
``unmanaged`` has ``allow_unmanaged = true``: the compatibility routes then try to
signal a pid Stablehand did not start, and a thread id that is not a process (pidfd_open
refuses it) is the real OS failure behind their documented 500s.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import IGNORE_TERM, async_wait_for

TOKEN = "conformance-token"

_STRANGER = ("import threading, time\n"
             "thread = threading.Thread(target=time.sleep, args=(120,), daemon=True)\n"
             "thread.start()\n"
             "print(thread.native_id, flush=True)\n"
             "thread.join()\n")


@dataclasses.dataclass(frozen=True)
class Daemons:
    main: Any        # token only
    limited: Any     # token, rate_limit 0.001/s with a burst of 1
    unmanaged: Any   # token, allow_unmanaged


@dataclasses.dataclass(frozen=True)
class Stranger:
    pid: int         # a live process Stablehand did not start
    thread_id: int   # one of its threads: /proc has it, but it is no process of its own


@pytest.fixture
async def daemons(make_daemon: Any, tmp_path: Path) -> Daemons:
    return Daemons(
        main=await make_daemon(token=TOKEN),
        limited=await make_daemon(tmp_path / "limited", token=TOKEN, rate_limit=0.001, rate_burst=1),
        unmanaged=await make_daemon(tmp_path / "unmanaged", token=TOKEN, allow_unmanaged=True),
    )


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    proc = subprocess.Popen([sys.executable, "-c", _STRANGER], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        thread_id = int(proc.stdout.readline())
        proc.stdout.close()
        yield Stranger(proc.pid, thread_id)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.kill()
        proc.wait()


async def start(client: Any, argv: list[str] | None = None, **body: Any) -> dict[str, Any]:
    """Start a process through the native API (with the token); its record."""
    response = await client.post("/processes", json={"argv": argv or ["sleep", "60"], **body},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 201, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def wait_idle(client: Any, process_id: int) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}/wait", params={"timeout": "20"},
                                headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200, await response.text()
    record: dict[str, Any] = await response.json()
    return record


async def start_ignoring_term(client: Any, **body: Any) -> dict[str, Any]:
    """A running process that ignores SIGTERM (grace 60 s): a kill leaves it terminating."""
    record = await start(client, IGNORE_TERM, grace=60, **body)

    async def ready() -> bool:
        response = await client.get(f"/processes/{record['id']}/output", params={"stream": "stdout"},
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        return b"ready" in await response.read()
    await async_wait_for(ready, what="the child to ignore SIGTERM")
    return record


async def force_kill(client: Any, record: dict[str, Any]) -> None:
    """SIGKILL it now (Tensorlake's DELETE) and wait until its record is idle."""
    response = await client.delete(f"/api/v1/processes/{record['pid']}",
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 204, await response.text()
    await wait_idle(client, record["id"])
