"""The access log: one line per request, JSON (default), plain text, or off.

Owns what a line says and what it never says: no credentials, no cookies, and
query parameters named in ``log.sensitive_query`` appear as ``REDACTED``. Lines
go to the ``sidecache.access`` logger (stderr unless configured otherwise).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl, quote

from aiohttp import web

from proxy.body import VerbatimStreamResponse

log = logging.getLogger("sidecache.access")

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
        parts.append(f"{quote(name, safe='')}={quote(shown, safe='')}")
    return "&".join(parts)


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
    def __init__(self, mode: str, sensitive: tuple[str, ...]) -> None:
        self.mode = mode
        self.sensitive = frozenset(s.lower() for s in sensitive)

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
        query = redact_query(raw_query, self.sensitive)
        duration_ms = round(seconds * 1000, 2)
        upstream_ms = round(upstream_s * 1000, 2) if upstream_s is not None else None
        if self.mode == "json":
            fields = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "client": client,
                "method": method,
                "path": raw_path,
                "query": query,
                "status": status,
                "cache": cache,
                "route": route,
                "bytes": nbytes,
                "duration_ms": duration_ms,
                "upstream_ms": upstream_ms,
            }
            log.info(json.dumps(fields, separators=(",", ":")))
        else:
            log.info(
                "%s %s %s%s %d %s route=%s bytes=%d %.1fms upstream=%s",
                client,
                method,
                raw_path,
                "?" + query if query else "",
                status,
                cache or "-",
                route or "-",
                nbytes,
                duration_ms,
                f"{upstream_ms}ms" if upstream_ms is not None else "-",
            )
