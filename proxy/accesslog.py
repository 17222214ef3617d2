"""The access log: one line per request, JSON (default), plain text, or off.

Owns what a line says and what it never says: no credentials, no cookies, and
query parameters named in ``log.sensitive_query`` appear as ``REDACTED``. Lines
are formatted here, on the event loop, and written by ``logwriter.LineWriter``
off it (stderr, or the ``sidecache.access`` logger's handlers if it has any).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from urllib.parse import parse_qsl, quote

from aiohttp import web

from proxy.body import VerbatimStreamResponse

# The JSON line, prepared once: strings go through ``_string`` (what ``json.dumps``
# does to a string: quoted, escaped, non-ASCII as ``\uXXXX``), numbers as ``repr``
# (as ``json.dumps`` writes them), absent values as ``null``. About four times
# cheaper than a ``json.dumps`` of a dict per line; the same bytes.
JSON_LINE = (
    '{"time":%s,"client":%s,"method":%s,"path":%s,"query":%s,"status":%d,'
    '"cache":%s,"route":%s,"bytes":%d,"duration_ms":%r,"upstream_ms":%s}'
)
TEXT_LINE = "%s %s %s%s %d %s route=%s bytes=%d %.1fms upstream=%s"
# The C encoder ``json.dumps`` itself uses for a string with ensure_ascii.
_string: Callable[[str], str] = encode_basestring_ascii

# Set by the handler on each request, read back here.
ROUTE_KEY: web.RequestKey[str] = web.RequestKey("sidecache.route", str)
UPSTREAM_KEY: web.RequestKey[float] = web.RequestKey("sidecache.upstream_s", float)
# Body bytes actually written of a large stored body (``body.SlicedPayload``), which
# goes out after the handler returns: a response cut short is logged with what it
# sent. (Streamed responses count their own: ``VerbatimStreamResponse.body_sent``.)
SENT_KEY: web.RequestKey[int] = web.RequestKey("sidecache.sent", int)
# The streamed response once its head is out: a request cancelled mid-body (at
# shutdown) is still logged, with what it sent.
STREAM_KEY: web.RequestKey[web.StreamResponse] = web.RequestKey(
    "sidecache.stream", web.StreamResponse
)


def redact_query(query: str, sensitive: frozenset[str]) -> str:
    """The query with the values of sensitive parameters replaced (names kept)."""
    if not query:
        return ""
    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        shown = "REDACTED" if name.lower() in sensitive else value
        # A raw byte that is not UTF-8 arrives as a lone surrogate: sent back as its byte.
        parts.append(f"{_quote(name)}={_quote(shown)}")
    return "&".join(parts)


def _quote(text: str) -> str:
    return quote(text, safe="", errors="surrogateescape")


def body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent, never the head or chunk framing: what a streamed response
    wrote, what a large stored body wrote once out (``SENT_KEY``), or the length
    of a body known in full."""
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    if isinstance(response, web.Response):
        sent: int | None = request.get(SENT_KEY)
        return sent if sent is not None else response.content_length or 0
    if isinstance(response, VerbatimStreamResponse):
        return response.body_sent
    # A WebSocket tunnel counts the message bytes it relayed to the client.
    tunnelled: int = request.get(SENT_KEY, 0)
    return tunnelled


class AccessLog:
    """Formats a line per request and hands it to ``put`` (a ``LineWriter``'s, which
    writes it off the event loop). Built again on reload; the writer stays."""

    def __init__(self, mode: str, sensitive: tuple[str, ...], put: Callable[[str], None]) -> None:
        self.mode = mode
        self.sensitive = frozenset(s.lower() for s in sensitive)
        self._put = put
        self._on = mode != "off"
        self._json = mode == "json"
        self._stamp = Stamp()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def record(
        self, request: web.BaseRequest, response: web.StreamResponse, seconds: float
    ) -> None:
        raw_path, _, raw_query = request.raw_path.partition("?")
        self.write(
            request.remote,
            request.method,
            raw_path,
            raw_query,
            response.status,
            response.headers.get("X-Cache", ""),
            request.get(ROUTE_KEY),
            body_bytes(request, response),
            seconds,
            request.get(UPSTREAM_KEY),
        )

    def write(
        self,
        client: str | None,
        method: str,
        raw_path: str,
        raw_query: str,
        status: int,
        cache: str,
        route: str | None,
        nbytes: int,
        seconds: float,
        upstream_s: float | None,
    ) -> None:
        """Log one request from plain values; ``raw_query`` as received (the
        sensitive parameters are redacted here)."""
        if not self._on:
            return
        query = redact_query(raw_query, self.sensitive) if raw_query else ""
        duration_ms = round(seconds * 1000, 2)
        upstream_ms = None if upstream_s is None else round(upstream_s * 1000, 2)
        if self._json:
            line = JSON_LINE % (
                self._stamp.json(),
                "null" if client is None else _string(client),
                _string(method),
                _string(raw_path),
                _string(query),
                status,
                _string(cache),
                "null" if route is None else _string(route),
                nbytes,
                duration_ms,
                "null" if upstream_ms is None else repr(upstream_ms),
            )
        else:
            line = TEXT_LINE % (
                client,
                method,
                raw_path,
                "?" + query if query else "",
                status,
                cache or "-",
                route or "-",
                nbytes,
                duration_ms,
                "-" if upstream_ms is None else f"{upstream_ms}ms",
            )
        self._put(line)


class Stamp:
    """The ``time`` field: UTC to the second, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._json = ""

    def json(self) -> str:
        """The current second as a JSON string, quotes included."""
        now = int(time.time())
        if now != self._second:
            self._json = time.strftime('"%Y-%m-%dT%H:%M:%SZ"', time.gmtime(now))
            self._second = now
        return self._json
