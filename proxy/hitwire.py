"""A plain cache hit as the bytes that go on the wire.

Owns the response head of an entry served whole to a ``GET`` or ``HEAD`` that
asks nothing more of it (no conditional, no range): the status line, the stored
headers (with the route's ``client_cache_control``) and ``Content-Length``,
prepared once per entry and route and kept on the entry (``StoredResponse.wire``);
per hit only ``Age``, ``X-Cache``, ``Cache-Status`` (its ``ttl``) and, for an
entry stored without one, ``Date`` are formatted. The same headers as
``answer.from_entry`` gives a plain hit, which ``test_hitwire`` holds in
agreement. Pure: imports neither aiohttp nor asyncio; time is an argument.
"""

from __future__ import annotations

import http
from email.utils import formatdate
from typing import TYPE_CHECKING

from proxy import headers as h
from proxy.answer import client_headers
from proxy.entry import StoredResponse

if TYPE_CHECKING:
    from proxy.config import RouteConfig

# Request headers that ask more of an entry than its whole body: a request that
# carries one is answered by ``answer.from_entry`` (304, 412, 206, 416).
ASKS_MORE = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "Range")

_status_lines: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, with the standard reason phrase (none if unknown)."""
    line = _status_lines.get(status)
    if line is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        _status_lines[status] = line
    return line


def head_block(entry: StoredResponse, route: RouteConfig) -> bytes:
    """The part of a plain hit's head that never changes for ``entry`` served on
    ``route``: status line, stored headers, ``Content-Length``; no final blank line."""
    headers = client_headers(entry.headers, route)
    lines = [status_line(entry.status)]
    # Header values were parsed from the app's response (no CR or LF), decoded
    # as UTF-8 with surrogate escapes: encoded back, they are the bytes received.
    lines += [f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in headers]
    lines.append(b"Content-Length: %d\r\n" % len(entry.body))
    return b"".join(lines)


def wire_head(entry: StoredResponse, route: RouteConfig) -> tuple[bytes, bool]:
    """``head_block``, built once per entry and route (a reload replaces routes), and
    whether it holds the app's ``Date`` (else each hit says when it was sent:
    RFC 9110 section 6.6.1)."""
    wire = entry.wire
    if wire and wire[0] is route:
        return wire[1], wire[2]  # type: ignore[return-value]
    block = head_block(entry, route)
    has_date = h.get(entry.headers, "date") is not None
    wire[:] = (route, block, has_date)
    return block, has_date


class Clock:
    """``Date`` header values, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self, wall: float) -> bytes:
        second = int(wall)
        if second != self._second:
            self._value = b"Date: %s\r\n" % formatdate(second, usegmt=True).encode("ascii")
            self._second = second
        return self._value


def tail(age: int, ttl: int, date: bytes = b"") -> bytes:
    """What a plain hit adds to its ``head_block``, through the blank line."""
    return b"%sAge: %d\r\nX-Cache: HIT\r\nCache-Status: %s%d\r\n\r\n" % (
        date,
        age,
        _PLAIN_HIT,
        ttl,
    )


_PLAIN_HIT = h.PLAIN_HIT.encode("ascii")
