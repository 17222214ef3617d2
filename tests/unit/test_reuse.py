"""Reusing upstream connections (proxy/reuse.py): the idle budget from the app's
``Keep-Alive`` hint, and which failed requests are sent again."""

from __future__ import annotations

import pytest

from proxy.reuse import Replay, hinted_timeout, idle_budget, replay


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ((), None),
        (("timeout=5",), 5.0),
        (("timeout=5, max=100",), 5.0),  # Apache's form
        (("max=100, timeout=2",), 2.0),
        (("Timeout = 3",), 3.0),
        (('timeout="4"',), 4.0),
        (("timeout=1.5",), 1.5),
        (("timeout=0",), 0.0),
        (("timeout=5", "timeout=2"), 2.0),  # two lines: the app closes at the earlier
        (("timeout=5, timeout=3",), 3.0),
        (("max=100",), None),
        (("timeout=",), None),
        (("timeout=-1",), None),
        (("timeout=abc",), None),
        (("timeout=1e3",), None),
        (("timeouts=5",), None),
        (("xtimeout=5",), None),
        (("timeout=abc", "timeout=7"), 7.0),
    ],
)
def test_the_keep_alive_timeout_hint(values: tuple[str, ...], seconds: float | None) -> None:
    assert hinted_timeout(values) == seconds


@pytest.mark.parametrize(
    ("default", "values", "budget"),
    [
        (1.5, (), 1.5),  # no hint: the configured idle time
        (1.5, ("max=5",), 1.5),
        (30.0, ("timeout=5",), 4.0),  # Node: a second early
        (30.0, ("timeout=2",), 1.0),
        (30.0, ("timeout=1",), 0.5),  # under 2 s: half of it
        (30.0, ("timeout=0",), 0.0),  # not kept at all
        (1.5, ("timeout=5",), 1.5),  # a hint never lengthens the configured time
        (1.5, ("timeout=2",), 1.0),
        (60.0, ("timeout=120",), 60.0),
        (30.0, ("garbage",), 30.0),
    ],
)
def test_the_idle_budget(default: float, values: tuple[str, ...], budget: float) -> None:
    assert idle_budget(default, values) == budget


@pytest.mark.parametrize(
    ("reused", "answered", "replayable", "decision"),
    [
        (True, False, True, Replay.RETRY),
        (True, False, False, Replay.STREAMED),
        (True, True, True, Replay.ANSWERED),
        (True, True, False, Replay.ANSWERED),
        (False, False, True, Replay.NEW_CONNECTION),
        (False, True, True, Replay.NEW_CONNECTION),
        (False, False, False, Replay.NEW_CONNECTION),
    ],
)
def test_which_failed_requests_are_sent_again(
    reused: bool, answered: bool, replayable: bool, decision: Replay
) -> None:
    assert replay(reused=reused, answered=answered, replayable=replayable) is decision
