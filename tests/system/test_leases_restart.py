"""Leases across a daemon restart (issue 20): re-armed from the stored expiry, never earlier
than start-up + min(lease, 30 s) (daemon/supervisor/leases.py)."""

from __future__ import annotations

import time
from typing import Any

from daemon.model import iso_to_epoch
from tests.helpers import alive, wait_for
from tests.system.test_daemon import call


def _epoch(text: str | None) -> float:
    value = iso_to_epoch(text)
    assert value is not None, text
    return value


def _get(d: Any, process_id: int) -> Any:
    status, body = call(d, "GET", f"/processes/{process_id}")
    assert status == 200, body
    return body


def test_a_restarted_daemon_rearms_the_lease_and_renewals_still_count(daemon: Any) -> None:
    d = daemon().start()
    status, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"], "lease": 3})
    assert status == 201, record
    stored = _epoch(record["leaseExpiresAt"])
    d.kill9()                                  # the keeper keeps the child
    d.start()
    restarted = time.time()
    after = _get(d, record["id"])
    assert after["state"] == "running" and alive(record["pid"])
    rearmed = _epoch(after["leaseExpiresAt"])
    assert rearmed >= stored
    # the timer is live: a renewal after the restart is taken, and keeps it past its expiry
    deadline = rearmed + 2
    while time.time() < deadline:
        status, renewed = call(d, "POST", f"/processes/{record['id']}/lease")
        assert status == 200 and renewed["state"] == "running", renewed
        time.sleep(0.3)
    assert alive(record["pid"])
    status, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=30")
    assert status == 200, final
    assert final["exitState"] == "canceled" and final["error"] == "lease expired"
    assert _epoch(final["completedAt"]) >= restarted
    wait_for(lambda: not alive(record["pid"]), 10, "the child to be gone")


def test_a_lease_that_lapsed_while_the_daemon_was_down_gets_a_moment(daemon: Any) -> None:
    d = daemon().start()
    status, record = call(d, "POST", "/processes", {"argv": ["sleep", "300"], "lease": 1})
    assert status == 201, record
    d.kill9()
    lapses = _epoch(record["leaseExpiresAt"])
    wait_for(lambda: time.time() > lapses + 0.5, 10, "the lease to lapse while nothing answers")
    d.start()
    after = _get(d, record["id"])
    assert after["state"] == "running" and alive(record["pid"])
    # The new expiry is saved within a second (renewals are written at most once a second).
    wait_for(lambda: _epoch(_get(d, record["id"])["leaseExpiresAt"]) > _epoch(record["leaseExpiresAt"])
             or _get(d, record["id"])["state"] != "running", 10, "the re-armed expiry")
    status, final = call(d, "GET", f"/processes/{record['id']}/wait?timeout=30")
    assert status == 200 and final["error"] == "lease expired", final
    wait_for(lambda: not alive(record["pid"]), 10, "the child to be gone")
