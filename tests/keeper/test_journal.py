"""The exit journal on its own: durable appends, acks, torn lines, compaction."""

from __future__ import annotations

from pathlib import Path

from daemon.keeper.journal import COMPACT_SLACK, Journal


def exit_entry(i: int, code: int = 0) -> dict[str, object]:
    return {"id": i, "pid": 1000 + i, "code": code, "signal": None, "time": 1.5}


def test_exits_survive_a_reopen_and_acks_are_remembered(tmp_path: Path) -> None:
    path = tmp_path / "exits.journal"
    journal = Journal(str(path))
    journal.append([exit_entry(1, 3), exit_entry(2)])
    journal.append([exit_entry(3)])
    assert journal.ack([2, 99]) == 1
    journal.close()
    reopened = Journal(str(path))
    assert list(reopened.pending) == [1, 3] and reopened.pending[1]["code"] == 3
    reopened.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "exits.journal"
    journal = Journal(str(path))
    journal.append([exit_entry(1)])
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"exit": {"id": 2, "pid": 5')   # a crash in the middle of an append
    reopened = Journal(str(path))
    assert list(reopened.pending) == [1]
    reopened.append([exit_entry(3)])
    reopened.close()
    again = Journal(str(path))
    assert list(again.pending) == [1, 3]
    again.close()


def test_the_journal_is_compacted_when_acks_pile_up(tmp_path: Path) -> None:
    path = tmp_path / "exits.journal"
    journal = Journal(str(path))
    for i in range(1, 3 * COMPACT_SLACK):
        journal.append([exit_entry(i)])
        journal.ack([i - 1] if i > 1 else [])
    assert len(path.read_bytes().splitlines()) <= 2 * COMPACT_SLACK + 2
    assert list(journal.pending) == [3 * COMPACT_SLACK - 1]
    journal.close()
    again = Journal(str(path))
    assert list(again.pending) == [3 * COMPACT_SLACK - 1]
    again.close()
    assert not (tmp_path / "exits.journal.new").exists()
