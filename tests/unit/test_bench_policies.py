"""The end-to-end policy comparison (bench/policies.py): its arguments and figures.
Its wrk runs are a benchmark, not a test."""

from __future__ import annotations

import os

import pytest

from bench.policies import change, cpu_seconds, main, per_hit


def test_change_is_relative_to_the_reference() -> None:
    assert change(110.0, 100.0) == "+10.0%"
    assert change(97.0, 100.0) == "-3.0%"
    assert change(5.0, 0.0) == "-"


def test_cpu_seconds_reads_this_process_time() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # some CPU work
    assert cpu_seconds(os.getpid()) >= before > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--policies", "lru"],  # nothing to compare with
        ["--policies", "lru,arc"],  # unknown
        ["--policies", "lru,lru"],  # twice
        ["--rounds", "0"],
        ["--duration", "0"],
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "--" in capsys.readouterr().out


def test_cpu_per_hit_is_all_the_time_over_all_the_hits() -> None:
    assert per_hit([1.0, 3.0], [100.0, 300.0], 5) == 4.0 / 2000
    assert per_hit([], [], 5) == 0.0
