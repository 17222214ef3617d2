"""A response body on the move after its head: its time limits, and who is to blame.

Owns the one loop that copies a body from where it is read (the app, or a
fill's relay) to where it goes (a client, or a fill's relay) under two bounds:
``cap``, the loop time by which the whole body must be through
(``upstream.stream_timeout`` after the head: how long an upstream slot may be
held), and ``idle``, how long one delivery may take (``server.send_timeout``: a
client that takes nothing). The app's silence is bounded by the upstream client
itself (``upstream.read_timeout``). When a bound runs out, the side that was
being waited on is to blame: a delivery raises ``SlowClient``, a read
``UpstreamTimeout``. Counting and logging are the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from proxy.upstream import UpstreamTimeout

Chunk = TypeVar("Chunk", bound=bytes | memoryview)


class SlowClient(Exception):
    """The client did not take the body in time; ``limit`` names the setting."""

    def __init__(self, limit: str) -> None:
        super().__init__(f"client too slow: cut at {limit}")
        self.limit = limit


class BodyCopy:
    """Copies one body under ``cap`` and ``idle`` (either may be None: no bound)."""

    __slots__ = ("cap", "idle")

    def __init__(self, *, cap: float | None, idle: float | None) -> None:
        self.cap = cap
        self.idle = idle

    async def run(
        self,
        chunks: AsyncIterator[Chunk],
        deliver: Callable[[Chunk], Awaitable[bool | None]],
    ) -> bool:
        """Deliver every chunk; False if ``deliver`` returned False (it wants no
        more). Errors of ``chunks`` and ``deliver`` pass through."""
        loop = asyncio.get_running_loop()
        cap, idle = self.cap, self.idle
        delivering = False
        # One timer, moved around each delivery: a read is bounded by the cap only,
        # a delivery by the cap and ``idle``.
        try:
            async with asyncio.timeout_at(cap) as deadline:
                async for chunk in chunks:
                    if idle is not None:
                        due = loop.time() + idle
                        deadline.reschedule(due if cap is None else min(cap, due))
                    delivering = True
                    more = await deliver(chunk)
                    delivering = False
                    if idle is not None:
                        deadline.reschedule(cap)
                    if more is False:
                        return False
        except TimeoutError:
            if not deadline.expired():
                raise
            # Named after the bound that ran out.
            over_cap = cap is not None and loop.time() >= cap
            limit = "upstream.stream_timeout" if over_cap else "server.send_timeout"
            if delivering:
                raise SlowClient(limit) from None
            raise UpstreamTimeout(f"body not complete within {limit}") from None
        return True
