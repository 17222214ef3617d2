"""The shared tier's circuit breaker (proxy/breaker.py)."""

from __future__ import annotations

from proxy.breaker import Breaker, BreakerState


def test_opens_after_consecutive_failures_only() -> None:
    b = Breaker(failures=3, reset=10)
    for now in (1, 2):
        assert b.allow(now)
        b.failure(now)
    b.success()  # a success in between resets the count
    for now in (3, 4, 5):
        assert b.allow(now)
        b.failure(now)
    assert b.state is BreakerState.OPEN
    assert not b.allow(6) and not b.allow(14.9)


def test_half_open_lets_one_trial_through() -> None:
    b = Breaker(failures=1, reset=10)
    b.failure(0)
    assert b.allow(10) and b.state is BreakerState.HALF_OPEN
    assert not b.allow(10.1)  # one trial at a time
    b.failure(10.2)  # the trial failed: open again, for another full period
    assert b.state is BreakerState.OPEN and not b.allow(15)
    assert b.allow(20.2)
    b.success()
    assert b.state is BreakerState.CLOSED and b.allow(20.3) and b.allow(20.4)
