"""Reusing upstream connections: how long an idle pooled connection may still
carry a request, and whether a request that failed on one is sent again.

An app closes a keep-alive connection after its own idle time (Node and uvicorn
5 s, gunicorn 2 s); a request written on a connection at the instant the app
closes it fails without any answer. Two rules keep clients from seeing that:

- a pooled connection is not reused after ``upstream.keepalive_timeout``, nor
  after the app's ``Keep-Alive: timeout=N`` hint less a margin (``idle_budget``);
- a request that failed on a *reused* connection before any byte of the
  response arrived is sent once more, on a new connection, if it can be sent
  again byte for byte (``replay``).

The client protocol and the connector (``proxy.upstream``) apply them. Pure:
imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum

# A request body up to this size is read whole before it is sent, so that it can
# be sent again; larger or chunked bodies are streamed and never replayed.
REPLAY_BYTES = 64 * 1024
# The app's idle timer starts when it has written its response, ours when we have
# read it, and our next request takes time to reach it: stop short of its hint by
# this much (or by half the hint, under 2 s).
HINT_MARGIN = 1.0

_TIMEOUT = re.compile(r'timeout\s*=\s*"?([0-9]+(?:\.[0-9]+)?)"?', re.IGNORECASE)


def hinted_timeout(values: Iterable[str]) -> float | None:
    """The ``timeout`` of ``Keep-Alive`` header values (``timeout=5, max=100``,
    RFC 2068 section 19.7.1.1), the smallest if several; None without a valid one."""
    found: float | None = None
    for value in values:
        for param in value.split(","):
            match = _TIMEOUT.fullmatch(param.strip())
            if match is not None:
                seconds = float(match.group(1))
                found = seconds if found is None else min(found, seconds)
    return found


def idle_budget(default: float, keep_alive: Iterable[str]) -> float:
    """How long a connection may sit idle in the pool after a response that carried
    these ``Keep-Alive`` values: ``default``, or less if the app said it closes
    sooner. 0 or less: do not keep it."""
    hint = hinted_timeout(keep_alive)
    if hint is None:
        return default
    return min(default, hint - min(HINT_MARGIN, hint / 2))


class Replay(Enum):
    """Whether a request whose connection failed is sent again, and if not, why."""

    RETRY = "sent again on a new connection"
    NEW_CONNECTION = "it failed on a new connection"  # the app is down, or refused it
    ANSWERED = "the app had begun to answer"  # it read the request: it may have acted
    STREAMED = "its body was streamed"  # gone: cannot be sent again


def replay(*, reused: bool, answered: bool, replayable: bool) -> Replay:
    """Send again a request that failed before its response head?

    Only if it failed on a reused connection before any byte of the response
    arrived, and only with the whole request still in hand (no body, or a body
    kept in memory: ``REPLAY_BYTES``). Any method, ``POST`` included (browsers
    do the same): a reused connection that fails before the app said anything is
    the app closing it while idle, which it does only before it reads a request,
    so the request was never handled. (An app that read it and died before
    answering looks the same: then a ``POST`` reaches it twice, a risk browsers
    take too. A failure on a new connection, or after the app began to answer,
    is never sent again.)"""
    if not reused:
        return Replay.NEW_CONNECTION
    if answered:
        return Replay.ANSWERED
    if not replayable:
        return Replay.STREAMED
    return Replay.RETRY
