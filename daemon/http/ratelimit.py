"""Token-bucket rate limiting per client, with the Cyrnel document's headers and 429 body.

Each client (its authenticated identity: see middlewares.py) has a bucket of
``burst`` tokens refilled at ``rate`` per second; a mutating request takes one.
Buckets live in an LRU of at most MAX_CLIENTS entries: each request moves its
bucket to the young end and, past the cap, the least recently used bucket is
dropped. Both are O(1), so no number of clients can make a request cost more
or the map grow without bound. A dropped bucket comes back full, which only
matters to a client idle while MAX_CLIENTS others were active.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable


@dataclasses.dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int          # Unix time at which the bucket is full again
    retry_after: int    # seconds until a token is available (>= 1 when refused)

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit),
                   "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    MAX_CLIENTS = 10_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None,
                 max_clients: int | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients or self.MAX_CLIENTS
        self._clock = clock or time.monotonic
        # client -> (tokens, updated), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> Decision:
        now = self._clock()
        tokens, updated = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        self._buckets.move_to_end(client)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        wall = time.time()
        full_in = (self.burst - tokens) / self.rate
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed=allowed, limit=self.burst, remaining=int(tokens),
                        reset=math.ceil(wall + full_in), retry_after=retry_after)

    def __len__(self) -> int:
        return len(self._buckets)
