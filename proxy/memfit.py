"""Does the cache fit its memory: percentages of memory, and the sum that must
stay under the cgroup limit.

Owns ``cache.max_bytes: N%`` arithmetic, the memory a sidecache needs beyond its
budget (a process's own overhead, and one fill buffer per upstream connection),
the refusal of a config whose sum exceeds the cgroup limit, and the ``memory``
figures of ``/stats`` and ``/metrics``. Numbers in, numbers and text out; the
machine is read by ``proxy.machine``. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MIB = 1024 * 1024

# RSS of a started, idle sidecache (interpreter, aiohttp, uvloop, pydantic,
# prometheus_client, the control app): 60 MiB measured on Linux x86-64 with
# CPython 3.11, single process and each worker alike; a supervisor of workers
# is one more such process. Rounded up; tests/integration/test_memory_limit.py
# checks a started process stays within it.
PROCESS_OVERHEAD = 64 * MIB

# Unread bytes a fill's relay may hold before the upstream read waits for its
# client (``proxy.fill``): what a response that is not kept holds per slot.
STREAM_WINDOW = 1024 * 1024

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def is_percentage(value: object) -> bool:
    return isinstance(value, str) and value.strip().endswith("%")


def parse_percentage(value: str) -> Fraction:
    """``"60%"`` -> 60, ``"12.5%"`` -> 25/2; more than 0 and at most 100."""
    m = _PERCENT.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a percentage (e.g. '60%')")
    percent = Fraction(m.group(1))
    if not 0 < percent <= 100:
        raise ValueError(f"{value!r} is not a percentage of memory: more than 0% and at most 100%")
    return percent


def share_of(total: int, percent: Fraction) -> int:
    """``percent`` of ``total`` bytes, rounded down to a whole byte (exact: no float)."""
    return int(total * percent / 100)


@dataclass(frozen=True, slots=True)
class Machine:
    """The memory figures a config's percentages and the memory check rely on."""

    cgroup_limit: int | None  # bytes; None: no limit (or none that binds)
    physical: int | None  # bytes of RAM; None: unknown

    @property
    def base(self) -> tuple[int, str] | None:
        """What ``cache.max_bytes: N%`` is a percentage of, and its name."""
        if self.cgroup_limit is not None:
            return self.cgroup_limit, "the cgroup memory limit"
        if self.physical is not None:
            return self.physical, "physical memory"
        return None


def mib(size: int) -> str:
    """``64MiB``, ``614.4MiB``: one unit throughout, so that a sum reads as one."""
    value = round(size / MIB, 1)
    return f"{value:g}MiB" if value < 10**6 else f"{int(value)}MiB"


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What sidecache may hold at most, against the limit it runs under."""

    budget: int  # cache.max_bytes, all workers together
    processes: int  # a single process; or the workers and their supervisor
    workers: int
    connections: int  # upstream.max_connections, per worker
    per_fill: int  # what one upstream slot may hold: a fill's buffer
    limit: int | None

    @property
    def overhead(self) -> int:
        return self.processes * PROCESS_OVERHEAD

    @property
    def in_flight(self) -> int:
        return self.workers * self.connections * self.per_fill

    @property
    def total(self) -> int:
        return self.budget + self.overhead + self.in_flight

    @property
    def fits(self) -> bool:
        return self.limit is None or self.total <= self.limit

    def sum_text(self) -> str:
        processes = "1 process" if self.processes == 1 else f"{self.processes} processes"
        workers = f"{self.workers} workers x " if self.workers > 1 else ""
        return (
            f"cache.max_bytes {mib(self.budget)} + overhead {mib(self.overhead)} ({processes}) "
            f"+ in flight {mib(self.in_flight)} ({workers}upstream.max_connections "
            f"{self.connections} x {mib(self.per_fill)}) = {mib(self.total)}"
        )

    def refusal(self) -> str | None:
        """The one-line reason to refuse this config, or None if it fits."""
        if self.fits or self.limit is None:
            return None
        limit = mib(self.limit)
        if limit == mib(self.total):  # over by less than the rounding shows
            limit = f"{limit} ({self.limit} bytes, {self.total - self.limit} short)"
        return (
            f"memory: {self.sum_text()} > the cgroup memory limit {limit}: lower "
            "cache.max_bytes, upstream.max_connections or cache.max_object_bytes, or set "
            "cache.allow_overcommit: true"
        )

    def describe(self) -> str:
        """The plan as ``sidecache check`` prints it."""
        if self.limit is None:
            return f"{self.sum_text()} at most; no cgroup memory limit"
        if self.fits:
            return (
                f"{self.sum_text()} at most, within the cgroup memory limit {mib(self.limit)} "
                f"({mib(self.limit - self.total)} to spare)"
            )
        return (
            f"{self.sum_text()} at most, over the cgroup memory limit {mib(self.limit)} "
            "(cache.allow_overcommit)"
        )


def plan_memory(
    *,
    max_bytes: int,
    max_object_bytes: int,
    max_connections: int,
    workers: int,
    limit: int | None,
) -> MemoryPlan:
    """A fill keeps its body while it may be stored: up to ``max_object_bytes``
    (a known length is read into one buffer of that size; bodies of unknown length
    are also bounded together by ``cache.max_bytes``, which does not add to this).
    A response that is not kept holds a ``STREAM_WINDOW`` at most. Each worker has
    its own ``max_connections`` slots; with workers, the supervisor is a process too."""
    return MemoryPlan(
        budget=max_bytes,
        processes=workers + 1 if workers > 1 else 1,
        workers=workers,
        connections=max_connections,
        per_fill=max(max_object_bytes, STREAM_WINDOW),
        limit=limit,
    )


def memory_figures(rss: int | None, limit: int | None) -> dict[str, int | None]:
    """``/stats`` ``memory``: RSS, the cgroup limit and what is left of it (None:
    unknown, or no limit)."""
    return {
        "rss_bytes": rss,
        "limit_bytes": limit,
        "headroom_bytes": limit - rss if limit is not None and rss is not None else None,
    }
