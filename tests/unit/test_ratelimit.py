"""The per-key token bucket, on a clock the test moves."""

from memsvc.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate_then_a_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.5  # one token at 2/s is half a second away
    clock.now += 0.25
    assert limiter.take("a") == 0.25  # a refused request costs nothing, the wait shrinks
    clock.now += 0.25
    assert limiter.take("a") == 0.0
    clock.now += 60
    assert [limiter.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # refilled to the burst, not past it


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(per_s=1.0, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_zero_rate_turns_the_limit_off() -> None:
    limiter = RateLimiter(per_s=0, burst=1, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.take("a") == 0.0 for _ in range(1000))
