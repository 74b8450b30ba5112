"""The poll's cap (head + tail, never inside a character) and its bounded cursors
(daemon/supervisor/polling.py); the reads themselves are tested in tests/integration/test_poll.py."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.output import OutputStore
from daemon.supervisor.polling import Polls, cap

MARKER = re.compile(r"\[\.\.\. (\d+) bytes omitted \.\.\.\]\n")


def test_what_fits_is_left_whole() -> None:
    assert cap("abc", 0, "", 256) == ("abc", 0)
    text = "x" * 256
    assert cap(text, 0, "", 256) == (text, 0)


def test_every_budget_cuts_at_character_boundaries_and_counts_what_it_left_out() -> None:
    for char in ("é", "€", "😀", "a"):
        text = char * 500 + "\n"
        size = len(text.encode())
        for max_bytes in range(256, 300):
            output, omitted = cap(text, 0, "", max_bytes)
            assert len(output.encode()) <= max_bytes and "\ufffd" not in output
            head, count, tail = MARKER.split(output)
            assert int(count) == omitted
            assert omitted + len(head.rstrip("\n").encode()) + len(tail.encode()) == size


def test_a_middle_never_read_is_counted_in_the_marker() -> None:
    output, omitted = cap("a" * 1000, 5000, "b" * 1000, 300)
    head, count, tail = MARKER.split(output)
    assert set(head.rstrip("\n")) == {"a"} and set(tail) == {"b"}
    assert int(count) == omitted == 7000 - len(head.rstrip("\n")) - len(tail)
    assert len(output.encode()) <= 300


def test_cursors_are_bounded_least_recently_used_first(tmp_path: Path) -> None:
    polls = Polls(OutputStore(tmp_path), max_cursors=3)
    for consumer in "abc":
        polls._cursor(1, consumer)
    polls._cursor(1, "a")                 # used again: "b" is now the oldest
    polls._cursor(2, "d")
    assert len(polls) == 3 and (1, "b") not in polls._cursors
    polls.forget(1)
    assert list(polls._cursors) == [(2, "d")]
    polls.forget(2)
    assert len(polls) == 0 and not polls._by_record
