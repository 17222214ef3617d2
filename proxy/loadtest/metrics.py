"""Recording requests and summarising them: counts, percentiles, time series.

Pure: times are arguments (seconds since the run started).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


@dataclass(slots=True)
class Second:
    """What completed during one second of the run."""

    requests: int = 0
    errors: int = 0
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Recorder:
    """Every completed request of one target, in aggregate and per second."""

    requests: int = 0
    bytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # sorted on demand
    seconds: list[Second] = field(default_factory=list)
    _sorted: bool = True

    def record(
        self,
        at: float,
        latency: float,
        *,
        status: int | None,
        nbytes: int = 0,
        x_cache: str | None = None,
        error: str | None = None,
    ) -> None:
        """One request that ended ``at`` seconds into the run, after ``latency`` seconds.

        ``error`` names a failure (``timeout``, ``connection``, ``http-5xx``...).
        """
        self.requests += 1
        self.bytes += nbytes
        if status is not None:
            self.statuses[status] += 1
        if x_cache:
            self.x_cache[x_cache] += 1
        if error is not None:
            self.errors[error] += 1
        self.latencies.append(latency)
        self._sorted = False
        index = int(at)
        while len(self.seconds) <= index:
            self.seconds.append(Second())
        second = self.seconds[index]
        second.requests += 1
        second.bytes += nbytes
        second.errors += error is not None
        second.latencies.append(latency)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def hit_rate(self) -> float | None:
        """Share of HIT among HIT/MISS/STALE answers; None if nothing said X-Cache."""
        looked_up = sum(self.x_cache[k] for k in ("HIT", "MISS", "STALE"))
        return self.x_cache["HIT"] / looked_up if looked_up else None

    def latency_ms(self, q: float) -> float:
        if not self._sorted:
            self.latencies.sort()
            self._sorted = True
        return percentile(self.latencies, q) * 1000

    def recent(self, now: float, window: int = 5) -> tuple[float, float]:
        """(requests per second, p95 latency in ms) over the last ``window`` whole seconds."""
        end = int(now)
        chosen = self.seconds[max(0, end - window) : end]
        if not chosen:
            return 0.0, 0.0
        latencies = sorted(x for s in chosen for x in s.latencies)
        return sum(s.requests for s in chosen) / len(chosen), percentile(latencies, 95) * 1000

    def series(self) -> list[dict[str, float]]:
        """Per second: requests, errors, MB and p50/p95 latency (ms), for charts and JSON."""
        out = []
        for t, s in enumerate(self.seconds):
            lat = sorted(s.latencies)
            out.append(
                {
                    "t": t,
                    "requests": s.requests,
                    "errors": s.errors,
                    "mb": round(s.bytes / 1e6, 3),
                    "p50_ms": round(percentile(lat, 50) * 1000, 2),
                    "p95_ms": round(percentile(lat, 95) * 1000, 2),
                }
            )
        return out

    def summary(self, duration: float) -> dict[str, object]:
        hit_rate = self.hit_rate()
        return {
            "requests": self.requests,
            "requests_per_s": round(self.requests / duration, 1) if duration else 0.0,
            "errors": self.error_count,
            "errors_by_kind": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "x_cache": dict(self.x_cache),
            "hit_rate": round(hit_rate, 4) if hit_rate is not None else None,
            "bytes": self.bytes,
            "p50_ms": round(self.latency_ms(50), 2),
            "p95_ms": round(self.latency_ms(95), 2),
            "p99_ms": round(self.latency_ms(99), 2),
            "max_ms": round(self.latency_ms(100), 2),
        }
