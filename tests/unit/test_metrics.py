"""Recording and summarising load-test requests (proxy/loadtest/metrics.py)."""

from __future__ import annotations

import pytest

from proxy.loadtest.metrics import Recorder, percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, 0.0),
        ([1.0], 99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_recorder_counts_and_summarises() -> None:
    r = Recorder()
    r.record(0.2, 0.010, status=200, nbytes=1000, x_cache="MISS")
    r.record(0.5, 0.002, status=200, nbytes=1000, x_cache="HIT")
    r.record(1.1, 0.001, status=200, nbytes=1000, x_cache="HIT")
    r.record(1.7, 0.003, status=200, nbytes=1000, x_cache="HIT")
    r.record(2.4, 5.0, status=None, error="timeout")
    r.record(2.5, 0.5, status=503, nbytes=20, error="http-503", x_cache="MISS")
    s = r.summary(duration=3.0)
    assert s["requests"] == 6 and s["requests_per_s"] == 2.0
    assert s["errors"] == 2 and s["errors_by_kind"] == {"timeout": 1, "http-503": 1}
    assert s["statuses"] == {"200": 4, "503": 1}
    assert s["hit_rate"] == 0.6
    assert s["bytes"] == 4020
    assert s["p50_ms"] == 3.0 and s["max_ms"] == 5000.0
    series = r.series()
    assert [p["requests"] for p in series] == [2, 2, 2]
    assert [p["errors"] for p in series] == [0, 0, 2]
    assert r.recent(now=2.0, window=2) == (2.0, 10.0)


def test_empty_recorder() -> None:
    r = Recorder()
    assert r.hit_rate() is None
    assert r.recent(now=5.0) == (0.0, 0.0)
    assert r.summary(duration=0)["requests_per_s"] == 0.0
