"""The access log's writer: finished lines are queued on the event loop and
written by a thread of their own, in batches.

Owns the only blocking part of the access log, the write: ``put`` appends to a
bounded queue and returns (a full queue drops the line and counts it, a request
never waits for a log); the thread, woken by a line, lets others gather for
``LINGER``, takes whatever is queued, writes it ``CHUNK`` lines at a time (one
write and one flush each), and waits for more. ``close`` writes what is left.

Where lines go is decided per batch: to the handlers of the ``sidecache.access``
logger when an application gave it some (as records made on the thread, at
INFO, if the logger lets INFO through), else straight to stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable

# How long ``join`` waits for the last lines to be written at shutdown.
CLOSE_TIMEOUT = 5.0
# Once woken by a line, how long the thread lets more gather before it writes:
# a few wake-ups a second, not one per request, each taking the GIL from the
# event loop. ``close`` cuts it short.
LINGER = 0.05
# Lines written at a time: a batch of 50 ms of hits (a few thousand lines) joined
# and encoded at once held the GIL for about half a millisecond, which the event
# loop's hits waited out (their p99); a chunk holds it a few tens of microseconds.
CHUNK = 256


class LineWriter:
    """``put`` on the event loop; one daemon thread writes. ``start``, then
    ``close`` and ``join`` once no line is to come."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        max_lines: int,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.logger = logger
        # Lines queued at most (``log.access_queue``; about 250 bytes each), read on
        # every put: changed on reload, 0 once closed.
        self.max_lines = max_lines
        self._on_drop = on_drop
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def put(self, line: str) -> None:
        """Queue a line; never blocks. A full queue (or a closed writer) drops it."""
        lines = self._lines
        if len(lines) >= self.max_lines:
            self._on_drop()
            return
        lines.append(line)
        # Set once per batch: the thread clears it before it takes the lines.
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sidecache-access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """No more lines (any later one is dropped, counted); the thread writes
        what is queued and ends. Call on the thread that puts."""
        self.max_lines = 0
        self._closing = True
        self._closed.set()
        self._wake.set()

    def join(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait for the thread to have written everything; False on timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        lines = self._lines
        while True:
            self._wake.wait()
            self._closed.wait(LINGER)
            self._wake.clear()
            # In chunks: the thread holds the GIL while it joins and encodes a
            # chunk, and lets the event loop run while the chunk is written.
            while lines:
                self._write([lines.popleft() for _ in range(min(len(lines), CHUNK))])
            if self._closing and not lines:
                return

    def _write(self, batch: list[str]) -> None:
        logger = self.logger
        if logger.handlers:
            if not logger.isEnabledFor(logging.INFO):
                return
            for line in batch:
                logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, line, (), None))
            return
        stream = sys.stderr
        if stream is None:  # no stderr at all (a detached process)
            return
        try:
            stream.write("\n".join(batch) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nowhere to say so
            pass
