"""Token-bucket rate limiting per client, with the Cyrnel document's headers and 429 body.

Each client (its bearer token, else its peer address, else its Unix uid) has a
bucket of ``burst`` tokens refilled at ``rate`` per second; a mutating request
takes one. Buckets that have refilled completely carry no information and are
dropped, so memory stays bounded by the number of recently active clients.
"""

from __future__ import annotations

import dataclasses
import math
import time
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

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}   # client -> (tokens, updated)

    def take(self, client: str) -> Decision:
        now = self._clock()
        tokens, updated = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.MAX_CLIENTS:
            self._evict(now)
        wall = time.time()
        full_in = (self.burst - tokens) / self.rate
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed=allowed, limit=self.burst, remaining=int(tokens),
                        reset=math.ceil(wall + full_in), retry_after=retry_after)

    def _evict(self, now: float) -> None:
        for client, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self.rate >= self.burst:
                del self._buckets[client]

