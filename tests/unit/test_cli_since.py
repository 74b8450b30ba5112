"""``stablehand logs --since``: what the CLI sends the daemon (cli_stream.since_argument)."""

from __future__ import annotations

import pytest

from daemon.cli_stream import since_argument

NOW = 1_780_000_000.0


@pytest.mark.parametrize(("text", "sent"), [
    ("30s", "1779999970.000"),
    ("10m", "1779999400.000"),
    ("1h30m", "1779994600.000"),
    ("2d", "1779827200.000"),
    ("1.5s", "1779999998.500"),
    ("2026-12-03T13:10:49Z", "2026-12-03T13:10:49Z"),          # absolute: sent as it is
    ("2026-12-03T14:10:49.5+01:00", "2026-12-03T14:10:49.5+01:00"),
    ("1700000000", "1700000000"),
])
def test_durations_become_unix_seconds_and_absolute_times_go_as_they_are(text: str, sent: str) -> None:
    assert since_argument(text, NOW) == sent


@pytest.mark.parametrize("text", ["", "s", "10x", "yesterday", "2026-12-03", "-10m", "10m ago"])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="a duration ago"):
        since_argument(text, NOW)
