"""The heap is trimmed once the daemon goes quiet after activity, and never while idle.

daemon/quiet.py arms one timer on the first activity after a quiet spell; while
activity goes on the timer looks again; once a whole delay passed without any, the
heap is trimmed (glibc's malloc_trim, daemon/oskit/memory.py) and no timer is left.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from daemon import oskit
from daemon.quiet import TrimWhenQuiet
from tests.helpers import async_wait_for

glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="malloc_trim is glibc's")


def _trims(quiet: TrimWhenQuiet, count: int) -> Any:
    async def reached() -> bool:
        return quiet.trims >= count
    return reached


@glibc
def test_trim_heap_calls_malloc_trim() -> None:
    assert oskit.trim_heap() is True


@glibc
async def test_a_burst_then_quiet_trims_once_and_leaves_no_timer() -> None:
    quiet = TrimWhenQuiet(delay=0.01)
    for _ in range(100):   # a burst: one timer for all of it
        quiet.touch()
    assert quiet._timer is not None
    await async_wait_for(_trims(quiet, 1), what="the heap trimmed after the burst")
    assert quiet.trims == 1 and quiet._timer is None   # idle: nothing armed, no wake-ups
    quiet.touch()   # the next burst arms it again
    await async_wait_for(_trims(quiet, 2), what="a second trim")
    quiet.close()


async def test_close_cancels_the_timer() -> None:
    quiet = TrimWhenQuiet(delay=3600)
    quiet.touch()
    assert quiet.trims == 0 and quiet._timer is not None
    quiet.close()
    assert quiet._timer is None


def test_outside_an_event_loop_nothing_is_armed() -> None:
    quiet = TrimWhenQuiet()
    quiet.touch()
    assert quiet._timer is None and quiet.trims == 0


@glibc
async def test_the_daemon_trims_its_heap_after_requests(client: Any) -> None:
    quiet = client.supervisor.quiet
    before = quiet.trims
    for _ in range(5):
        assert (await client.get("/healthz")).status == 200
    await async_wait_for(_trims(quiet, before + 1), what="the daemon's heap trimmed once quiet")
