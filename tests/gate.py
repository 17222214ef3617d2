"""A logging handler that holds the access log's writer thread until opened."""

from __future__ import annotations

import logging
import threading

WAIT = 10.0  # bounds every wait on the writer thread; never reached when all is well


class Gate(logging.Handler):
    """Holds the writer thread in its first line until opened."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.open = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.open.wait(WAIT)
        self.lines.append(record.getMessage())
