"""The access log's writer thread (proxy/logwriter.py): bounded, batched, flushed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from proxy.logwriter import LineWriter
from tests.gate import WAIT, Gate


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of the test's own, without handlers, left as found."""
    logger = logging.getLogger(f"test.logwriter.{request.node.name}")
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


class Drops:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_full_queue_drops_lines_and_counts_them(logger: logging.Logger) -> None:
    gate = Gate()
    logger.addHandler(gate)
    logger.setLevel(logging.INFO)
    drops = Drops()
    writer = LineWriter(logger, max_lines=2, on_drop=drops)
    writer.start()
    writer.put("1")
    assert gate.entered.wait(WAIT)  # the thread holds "1": the queue is empty
    for line in ("2", "3", "4", "5"):
        writer.put(line)  # returns at once even though nothing is written
    assert drops.count == 2
    gate.open.set()
    writer.close()
    assert writer.join(WAIT)
    assert gate.lines == ["1", "2", "3"]


def test_every_line_is_on_stderr_once_join_returns(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = LineWriter(logger, max_lines=100_000, on_drop=Drops())
    lines = [f'{{"n":{n}}}' for n in range(20_000)]
    writer.start()
    for line in lines:
        writer.put(line)
    writer.close()
    assert writer.join(WAIT)
    assert capsys.readouterr().err.splitlines() == lines


def test_a_line_after_close_is_dropped_and_counted(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    drops = Drops()
    writer = LineWriter(logger, max_lines=10, on_drop=drops)
    writer.start()
    writer.put("before")
    writer.close()
    writer.put("after")
    assert writer.join(WAIT)
    assert capsys.readouterr().err == "before\n"
    assert drops.count == 1


def test_a_configured_logger_gets_the_lines_at_its_level(logger: logging.Logger) -> None:
    gate = Gate()
    gate.open.set()
    logger.addHandler(gate)
    logger.setLevel(logging.WARNING)  # the application does not want them
    writer = LineWriter(logger, max_lines=10)
    writer.start()
    writer.put("not wanted")
    writer.close()
    assert writer.join(WAIT)
    assert gate.lines == []

    logger.setLevel(logging.INFO)
    writer = LineWriter(logger, max_lines=10)
    writer.start()
    writer.put("100% wanted %s")  # the message as written, never %-formatted
    writer.close()
    assert writer.join(WAIT)
    assert gate.lines == ["100% wanted %s"]
