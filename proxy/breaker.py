"""A circuit breaker for the shared tier: stop asking a store that keeps failing.

Closed: calls go through; ``failures`` consecutive failures open it. Open: calls
are skipped until ``reset`` seconds have passed, then one trial call is let
through (half-open); its success closes the breaker, its failure opens it again.
Pure: time is an argument. Imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(slots=True)
class Breaker:
    failures: int = 5
    reset: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    trial_running: bool = False

    def allow(self, now: float) -> bool:
        """May a call be made now?"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.reset:
            self.state = BreakerState.HALF_OPEN
            self.trial_running = False
        if self.state is BreakerState.HALF_OPEN and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.trial_running = False

    def failure(self, now: float) -> None:
        self.consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self.consecutive >= self.failures:
            self.state = BreakerState.OPEN
            self.opened_at = now
            self.trial_running = False
