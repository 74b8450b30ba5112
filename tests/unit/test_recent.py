"""RecentRecords: settled records in memory, bounded, and never a deleted one brought back."""

from __future__ import annotations

from daemon.model import Process, State
from daemon.recent import RecentRecords, approximate_size


def record(process_id: int, state: State = State.IDLE, **fields: object) -> Process:
    return Process(id=process_id, state=state, argv=["true"], created_at="2026-12-03T00:00:00Z",
                   **fields)  # type: ignore[arg-type]


def test_keeps_idle_records_only() -> None:
    recent = RecentRecords()
    recent.add(record(1))
    recent.add(record(2, State.RUNNING))
    recent.add(record(3, State.TERMINATING))
    assert recent.get(1) is not None and recent.get(2) is None and recent.get(3) is None


def test_least_recently_used_goes_first() -> None:
    recent = RecentRecords(max_records=2)
    recent.add(record(1))
    recent.add(record(2))
    assert recent.get(1) is not None           # 1 is now the most recently used
    recent.add(record(3))
    assert recent.get(2) is None and recent.get(1) is not None and recent.get(3) is not None
    assert len(recent) == 2


def test_byte_budget_counts_what_clients_sent() -> None:
    big = record(1, env={"BLOB": "x" * 10_000})
    assert approximate_size(big) > 10_000
    recent = RecentRecords(max_bytes=approximate_size(big) + approximate_size(record(2)))
    recent.add(big)
    recent.add(record(2))
    assert recent.get(1) is not None
    recent.add(record(3))                     # over budget: the least recently used goes
    assert recent.get(2) is None and recent.get(1) is not None and recent.get(3) is not None
    recent.add(record(4, env={"BLOB": "x" * 100_000}))   # larger than the whole budget
    assert recent.get(4) is None and recent.get(1) is not None


def test_adding_again_replaces_without_double_counting() -> None:
    recent = RecentRecords(max_records=10, max_bytes=3 * approximate_size(record(1)))
    for _ in range(5):
        recent.add(record(1))
    recent.add(record(2))
    recent.add(record(3))
    assert len(recent) == 3


def test_a_read_that_raced_a_deletion_is_not_kept() -> None:
    recent = RecentRecords()
    recent.add(record(1))
    generation = recent.generation             # a reader starts, misses, goes to SQLite...
    recent.forget(7)                           # ...while another id is deleted
    recent.offer(record(7), generation)        # the reader read the row before it went
    assert recent.get(7) is None
    assert recent.get(1) is not None           # forgetting 7 left 1 alone
    recent.offer(record(8), recent.generation)
    assert recent.get(8) is not None
