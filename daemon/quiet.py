"""Trim the C heap once the daemon goes quiet after activity (issue 21, memory).

A burst of requests and starts leaves free pages inside glibc's heaps that stay
in the daemon's RSS (see :mod:`daemon.oskit.memory`). They are handed back once
nothing has happened for ``delay`` seconds, never while requests come in.

The cost on the hot path is one integer increment, plus one timer armed on the
first activity after a quiet spell. While busy, the timer looks again every
``delay`` seconds; an idle daemon has no timer at all (no wake-ups). The
supervisor tells it of activity: every committed state change (:meth:`observe`
is one of its listeners) and every HTTP request answered (``Supervisor.served``).
Outside a running event loop nothing is armed.
"""

from __future__ import annotations

import asyncio

from . import oskit

DELAY = 0.25   # seconds without activity before the heap is trimmed


class TrimWhenQuiet:
    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self.trims = 0                  # how many times the heap was trimmed (tests read it)
        self._activity = 0
        self._seen = 0
        self._timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        """Something happened: trim once ``delay`` seconds pass without anything more."""
        self._activity += 1
        if self._timer is None or self._timer.cancelled():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._seen = self._activity
            self._timer = loop.call_later(self.delay, self._check, loop)

    def observe(self, _record: object) -> None:
        """Listener for committed state changes: activity."""
        self.touch()

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._activity != self._seen:   # still busy: look again later
            self._seen = self._activity
            self._timer = loop.call_later(self.delay, self._check, loop)
            return
        self._timer = None
        if oskit.trim_heap():
            self.trims += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
