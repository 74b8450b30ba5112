"""State-change events for ``GET /events``: a bounded ring for resumption, fan-out to subscribers.

Each committed state change gets the next sequence number (the SSE ``id``). A
subscriber that reconnects with ``Last-Event-ID`` receives what it missed if it
is still in the ring; the ring is bounded, so a very late client starts afresh.
A subscriber that does not keep up loses its oldest queued events rather than
growing the daemon's memory.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

from .model import Process


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One committed change. Holds the record's snapshot and renders it only when a
    subscriber sends it: most changes are published with nobody listening."""

    seq: int
    snapshot: Process

    @property
    def record(self) -> dict[str, Any]:
        return self.snapshot.to_json()

    @property
    def process_id(self) -> int:
        return self.snapshot.id

    @property
    def ref(self) -> str | None:
        return self.snapshot.ref


class EventHub:
    def __init__(self, ring_size: int = 1024, queue_size: int = 1024) -> None:
        self._ring: collections.deque[ChangeEvent] = collections.deque(maxlen=ring_size)
        self._subscribers: set[asyncio.Queue[ChangeEvent]] = set()
        self._queue_size = queue_size
        self._seq = 0

    def publish(self, record: Process) -> None:
        self._seq += 1
        event = ChangeEvent(self._seq, record)  # already a snapshot (Supervisor._emit)
        self._ring.append(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self, last_seq: int | None = None) -> tuple[asyncio.Queue[ChangeEvent], list[ChangeEvent]]:
        """A queue of future events, and the missed ones after ``last_seq`` still in the ring."""
        queue: asyncio.Queue[ChangeEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        missed = [e for e in self._ring if last_seq is not None and e.seq > last_seq]
        return queue, missed

    def unsubscribe(self, queue: asyncio.Queue[ChangeEvent]) -> None:
        self._subscribers.discard(queue)
