"""The live progress table shown while a load test runs (rich)."""

from __future__ import annotations

from rich.table import Table

from proxy.loadtest.crowd import Crowd


def progress(crowd: Crowd, label: str) -> Table:
    r = crowd.recorder
    now = crowd.now if crowd.started else 0.0
    rate, p95_recent = r.recent(now)
    hit = r.hit_rate()
    t = Table(title=f"{label}: {crowd.target}", expand=False)
    for column in (
        "elapsed",
        "requests",
        "req/s (5 s)",
        "errors",
        "hit rate",
        "p50",
        "p95 (5 s)",
        "p99",
    ):
        t.add_column(column, justify="right")
    t.add_row(
        f"{min(now, crowd.options.duration):.0f}/{crowd.options.duration:.0f} s",
        f"{r.requests:,}",
        f"{rate:,.0f}",
        f"{r.error_count:,}",
        f"{hit:.1%}" if hit is not None else "-",
        f"{r.latency_ms(50):.0f} ms",
        f"{p95_recent:.0f} ms",
        f"{r.latency_ms(99):.0f} ms",
    )
    return t
