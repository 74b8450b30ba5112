"""What one run of a managed process leaves behind is stopped without touching the next run's.

Every run carries ``STABLEHAND_RUN`` beside ``STABLEHAND_ID``. When run 1's leader
exits, the daemon stops what it left in its tree (an orphan that ignores SIGTERM
holds that stop for its whole grace, then gets SIGKILL). Run 2 starts after its
backoff, well inside that grace, and leaves an orphan of its own. The SIGKILL that
ends run 1's leftovers must not reach run 2's orphan, which carries the same id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.helpers import alive, async_wait_for
from tests.integration.test_processes import get, start, wait_idle

SCRIPT = r"""
if [ "$STABLEHAND_RUN" = 1 ]; then
  sh -c 'trap "" TERM; echo $$ > "$0/run1.tmp"; mv "$0/run1.tmp" "$0/run1"; exec sleep 300' "$DIR" &
  while [ ! -s "$DIR/run1" ]; do sleep 0.01; done
  exit 1
fi
sh -c 'sleep 300 & echo $! > "$0/run2.tmp"; mv "$0/run2.tmp" "$0/run2"' "$DIR"
exec sleep 300
"""


def _holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()
    return check


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


async def _two_runs(make_daemon: Any, tmp_path: Path) -> tuple[Any, dict[str, Any], int, int]:
    """A daemon with a 3 s grace running SCRIPT: (client, record, run 1's orphan, run 2's),
    once run 2 has left its orphan (run 1's is then in the grace of its stop)."""
    client = await make_daemon(grace=3.0)
    record = await start(client, argv=["sh", "-c", SCRIPT], env={"DIR": str(tmp_path)},
                         restart={"policy": "on_failure", "initialBackoffMs": 100,
                                  "maxBackoffMs": 100})
    await async_wait_for(_holds(lambda: _pid(tmp_path / "run2") is not None), timeout=10,
                         what="run 2 to leave its orphan")
    left_by_1, left_by_2 = _pid(tmp_path / "run1"), _pid(tmp_path / "run2")
    assert left_by_1 is not None and left_by_2 is not None
    assert alive(left_by_1), "run 1's orphan ignores SIGTERM: it lives until the grace is over"
    return client, record, left_by_1, left_by_2


async def test_stopping_what_run_1_left_spares_the_orphan_of_run_2(
        make_daemon: Any, tmp_path: Path) -> None:
    client, record, left_by_1, left_by_2 = await _two_runs(make_daemon, tmp_path)

    await async_wait_for(_holds(lambda: not alive(left_by_1)), timeout=10,
                         what="run 1's orphan to be SIGKILLed once its grace was over")
    assert alive(left_by_2), "the stop of run 1's leftovers killed an orphan of run 2"
    assert (await get(client, record["id"]))["managed"]["run"] == 2

    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 200
    final = await wait_idle(client, record["id"], timeout=15)
    assert final["exitState"] == "canceled"
    await async_wait_for(_holds(lambda: not alive(left_by_2)), timeout=10,
                         what="the stop of run 2 to take its own orphan")


async def test_the_last_stop_takes_what_earlier_runs_left(make_daemon: Any, tmp_path: Path) -> None:
    """Killed while run 1's leftovers are still in their grace: idle means they are gone too."""
    client, record, left_by_1, left_by_2 = await _two_runs(make_daemon, tmp_path)

    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 200
    final = await wait_idle(client, record["id"], timeout=15)
    assert final["exitState"] == "canceled"
    assert not alive(left_by_1), "idle, yet an orphan of its run 1 is still alive"
    assert not alive(left_by_2)


async def test_an_orphan_that_sets_an_odd_run_marker_is_still_stopped(
        client: Any, tmp_path: Path) -> None:
    """STABLEHAND_RUN comes from the process's own environment: '²' is a digit to
    str.isdigit but no number to int(). The stop must not break on it; not a number
    means "cannot tell which run", and the orphan carries the record's id: it is taken."""
    script = ('(STABLEHAND_RUN=² exec sleep 300 & echo $! > "$DIR/odd.tmp"; '
              'mv "$DIR/odd.tmp" "$DIR/odd"); exec sleep 300')
    record = await start(client, argv=["sh", "-c", script], env={"DIR": str(tmp_path)},
                         restart={"policy": "on_failure"})
    await async_wait_for(_holds(lambda: _pid(tmp_path / "odd") is not None), what="the orphan")
    odd = _pid(tmp_path / "odd")
    assert odd is not None and alive(odd)

    response = await client.post(f"/processes/{record['id']}/signals/kill")
    assert response.status == 200
    final = await wait_idle(client, record["id"], timeout=15)
    assert final["exitState"] == "canceled"
    assert not alive(odd)
