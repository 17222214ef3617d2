"""Percentages of memory, and whether a config fits its cgroup limit (proxy/memfit.py)."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from proxy.memfit import (
    MIB,
    PROCESS_OVERHEAD,
    STREAM_WINDOW,
    Machine,
    memory_figures,
    mib,
    parse_percentage,
    plan_memory,
    share_of,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("text", "percent"),
    [
        ("60%", Fraction(60)),
        ("12.5%", Fraction(25, 2)),
        (" 100 % ", Fraction(100)),
        ("0.5%", Fraction(1, 2)),
    ],
)
def test_percentages(text: str, percent: Fraction) -> None:
    assert parse_percentage(text) == percent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0%", "'0%' is not a percentage of memory: more than 0% and at most 100%"),
        ("0.0%", "'0.0%' is not a percentage of memory: more than 0% and at most 100%"),
        ("150%", "'150%' is not a percentage of memory: more than 0% and at most 100%"),
        ("100.1%", "'100.1%' is not a percentage of memory: more than 0% and at most 100%"),
        ("abc%", "'abc%' is not a percentage (e.g. '60%')"),
        ("-5%", "'-5%' is not a percentage (e.g. '60%')"),
        ("%", "'%' is not a percentage (e.g. '60%')"),
        ("60%%", "'60%%' is not a percentage (e.g. '60%')"),
        ("1e2%", "'1e2%' is not a percentage (e.g. '60%')"),
    ],
)
def test_bad_percentages(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_percentage(text)


@pytest.mark.parametrize(
    ("total", "percent", "share"),
    [
        (GIB, Fraction(60), 644245094),  # 644245094.4: rounded down
        (GIB, Fraction(100), GIB),
        (GIB, Fraction(50), GIB // 2),
        (1000, Fraction(333, 10), 333),  # 33.3 % of 1000 is 333, exactly
        (1001, Fraction(25, 2), 125),  # 125.125
        (99, Fraction(1, 2), 0),
        # Exact where a float would not be: 2**62 + 1 halves to 2**61 (+ 0.5).
        (2**62 + 1, Fraction(50), 2**61),
    ],
)
def test_a_share_is_rounded_down_to_a_whole_byte(total: int, percent: Fraction, share: int) -> None:
    assert share_of(total, percent) == share


def test_what_a_percentage_is_of() -> None:
    assert Machine(GIB, 16 * GIB).base == (GIB, "the cgroup memory limit")
    assert Machine(None, 16 * GIB).base == (16 * GIB, "physical memory")
    assert Machine(None, None).base is None


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * MIB, "64MiB"), (644245094, "614.4MiB"), (GIB, "1024MiB"), (0, "0MiB")],
)
def test_sizes_in_one_unit(size: int, text: str) -> None:
    assert mib(size) == text


def test_a_single_process_plan() -> None:
    plan = plan_memory(
        max_bytes=GIB, max_object_bytes=16 * MIB, max_connections=50, workers=1, limit=2 * GIB
    )
    assert plan.overhead == PROCESS_OVERHEAD
    assert plan.in_flight == 50 * 16 * MIB
    assert plan.total == GIB + PROCESS_OVERHEAD + 800 * MIB
    assert plan.fits and plan.refusal() is None
    assert plan.describe() == (
        "cache.max_bytes 1024MiB + overhead 64MiB (1 process) + in flight 800MiB "
        "(upstream.max_connections 50 x 16MiB) = 1888MiB at most, within the cgroup memory "
        "limit 2048MiB (160MiB to spare)"
    )


def test_workers_each_have_their_slots_and_the_supervisor_is_a_process_too() -> None:
    plan = plan_memory(
        max_bytes=GIB, max_object_bytes=8 * MIB, max_connections=20, workers=4, limit=GIB
    )
    assert plan.processes == 5
    assert plan.overhead == 5 * PROCESS_OVERHEAD
    assert plan.in_flight == 4 * 20 * 8 * MIB
    assert plan.refusal() == (
        "memory: cache.max_bytes 1024MiB + overhead 320MiB (5 processes) + in flight 640MiB "
        "(4 workers x upstream.max_connections 20 x 8MiB) = 1984MiB > the cgroup memory limit "
        "1024MiB: lower cache.max_bytes, upstream.max_connections or cache.max_object_bytes, "
        "or set cache.allow_overcommit: true"
    )


def test_a_slot_holds_at_least_the_stream_window() -> None:
    plan = plan_memory(
        max_bytes=GIB, max_object_bytes=64 * 1024, max_connections=10, workers=1, limit=None
    )
    assert plan.per_fill == STREAM_WINDOW
    assert plan.in_flight == 10 * STREAM_WINDOW


def test_a_total_equal_to_the_limit_fits_and_one_byte_more_does_not() -> None:
    exact = GIB + PROCESS_OVERHEAD + 10 * 16 * MIB
    args = {"max_bytes": GIB, "max_object_bytes": 16 * MIB, "max_connections": 10, "workers": 1}
    assert plan_memory(**args, limit=exact).fits
    over = plan_memory(**args, limit=exact - 1)
    assert not over.fits
    assert over.refusal() == (
        "memory: cache.max_bytes 1024MiB + overhead 64MiB (1 process) + in flight 160MiB "
        "(upstream.max_connections 10 x 16MiB) = 1248MiB > the cgroup memory limit 1248MiB "
        "(1308622847 bytes, 1 short): lower cache.max_bytes, "
        "upstream.max_connections or cache.max_object_bytes, or set cache.allow_overcommit: true"
    )
    assert over.describe().endswith("over the cgroup memory limit 1248MiB (cache.allow_overcommit)")


def test_without_a_limit_nothing_is_refused() -> None:
    plan = plan_memory(
        max_bytes=64 * GIB, max_object_bytes=16 * MIB, max_connections=50, workers=1, limit=None
    )
    assert plan.fits and plan.refusal() is None
    assert plan.describe().endswith("= 66400MiB at most; no cgroup memory limit")


@pytest.mark.parametrize(
    ("rss", "limit", "figures"),
    [
        (100, 1000, {"rss_bytes": 100, "limit_bytes": 1000, "headroom_bytes": 900}),
        (1200, 1000, {"rss_bytes": 1200, "limit_bytes": 1000, "headroom_bytes": -200}),
        (100, None, {"rss_bytes": 100, "limit_bytes": None, "headroom_bytes": None}),
        (None, 1000, {"rss_bytes": None, "limit_bytes": 1000, "headroom_bytes": None}),
    ],
)
def test_memory_figures(rss: int | None, limit: int | None, figures: dict[str, int | None]) -> None:
    assert memory_figures(rss, limit) == figures
