"""Per-key request rate limits: one token bucket per API key, in this API process's memory."""

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """`per_s` requests a second on average, bursts of up to `burst`; `per_s` 0 turns it off.

    The buckets live in the process, so each API process (or replica) limits on its own and a
    restart refills them: a guard against a runaway client, not an exact quota.
    """

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (tokens left, when last counted); one entry per key that has made a request, so
        # the map is bounded by the keys that exist (requests are counted only once authenticated).
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.per_s > 0

    def take(self, key: str) -> float:
        """Spend one request of `key`'s allowance: 0.0 if allowed, else seconds until it would be."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_s
