"""Reusing upstream connections: how long an idle pooled connection may still
carry a request.

An app closes a keep-alive connection after its own idle time (Node and uvicorn
5 s, gunicorn 2 s); a request written on a connection at the instant the app
closes it fails without any answer. So a pooled connection is not reused after
``upstream.keepalive_timeout``, nor after the app's ``Keep-Alive: timeout=N``
hint less a margin (``idle_budget``).

The client protocol and the connector (``proxy.upstream``) apply it. Pure:
imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
