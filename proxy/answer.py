"""The response a client gets from the cache, as a value: status, headers, body.

Owns what is said on top of a stored entry: ``Age``, ``X-Cache``,
``Cache-Status`` (RFC 9211, through ``headers.cache_status``), the route's
``client_cache_control``, and the answers to conditional and range requests
(304 with the headers RFC 9110 section 15.4.5 keeps, 412, 206, 416: decided by
``ranges.py``). Also the head of a miss streamed from the app. The driver turns
an ``Answer`` into an aiohttp response. Pure: imports neither aiohttp nor asyncio;
time is an argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from proxy import headers as h
from proxy.entry import Body, Headers
from proxy.flow import Serve, Served, Stream
from proxy.policy import RequestHeaders, age, vary_on_coding
from proxy.ranges import Partial, Unsatisfiable, answer_range, not_modified, precondition_failed

if TYPE_CHECKING:
    from proxy.config import RouteConfig

HeaderList = list[tuple[str, str]]

# RFC 9110 section 15.4.5: the headers a 304 carries from the stored response.
_NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
# This proxy's own, and the app's Server: kept on a 304 or 412 too.
_OURS = frozenset({"age", "via", "x-cache", "cache-status", "server"})


# The hit path's values: a NamedTuple's generated __new__ costs twice
# tuple.__new__, and an Enum member read through its class three times a global.
_new = tuple.__new__
_HIT = Served.HIT


class Answer(NamedTuple):
    """A response from the cache. ``body`` None: none (304, 412, 416); a memoryview
    is a part of the stored body (206)."""

    status: int
    headers: HeaderList
    body: Body | memoryview | None


def from_entry(serve: Serve, route: RouteConfig, request: RequestHeaders, now: float) -> Answer:
    """The answer to ``request`` from ``serve.entry``: the whole entry, or the answer
    its preconditions, conditionals or range call for."""
    entry, served, detail = serve
    # entry.headers already carry ETag and Via (policy.build_entry): only what
    # changes with time is added. A plain list: aiohttp builds its multidict once.
    if route.client_cache_control is None:
        headers = list(entry.headers)
    else:
        headers = client_headers(entry.headers, route)
    if served is _HIT:
        if detail is None:  # the plain hit: cache_status(hit=True, ttl=...), one call less
            status = h.PLAIN_HIT + str(int(entry.fresh_until - now))
        else:
            status = h.cache_status(hit=True, ttl=entry.fresh_until - now, detail=detail)
        marker = "HIT"
    elif served is Served.STALE:
        status = h.cache_status(hit=True, fwd="stale", ttl=entry.fresh_until - now, detail=detail)
        marker = "STALE"
    elif served is Served.MISS:
        status = h.cache_status(
            hit=False, fwd="uri-miss", fwd_status=entry.status, stored=True, detail=detail
        )
        marker = "MISS"
    else:
        # RFC 9211 section 2.2: stale, forwarded, and validated with a 304. The body
        # is the cache's: a HIT to X-Cache readers.
        status = h.cache_status(
            hit=False, fwd="stale", fwd_status=304, ttl=entry.fresh_until - now, detail=detail
        )
        marker = "HIT"
    headers += (("Age", str(age(entry, now))), ("X-Cache", marker), ("Cache-Status", status))
    im, ius = request.get("If-Match"), request.get("If-Unmodified-Since")
    inm, ims = request.get("If-None-Match"), request.get("If-Modified-Since")
    if im is not None or ius is not None or inm is not None or ims is not None:
        # RFC 9110 section 13.2.2: If-Match / If-Unmodified-Since first.
        last_modified = h.get(entry.headers, "last-modified")
        if (im is not None or ius is not None) and precondition_failed(
            if_match=im, if_unmodified_since=ius, etag=entry.etag, last_modified=last_modified
        ):
            return Answer(412, validators_only(headers), None)
        # RFC 9111 section 4.3.2: without Last-Modified, If-Modified-Since is
        # compared with the stored response's Date.
        if (inm is not None or ims is not None) and not_modified(
            if_none_match=inm,
            if_modified_since=ims,
            etag=entry.etag,
            last_modified=last_modified,
            date=h.get(entry.headers, "date"),
        ):
            return Answer(304, validators_only(headers), None)
    body = entry.body
    range_header = request.get("Range")
    if range_header is not None and entry.status == 200:
        match answer_range(
            range_header, len(body), if_range=request.get("If-Range"), etag=entry.etag
        ):
            case Partial(start, end):
                headers.append(("Content-Range", f"bytes {start}-{end}/{len(body)}"))
                return Answer(206, headers, memoryview(body)[start : end + 1])
            case Unsatisfiable():
                headers.append(("Content-Range", f"bytes */{len(body)}"))
                return Answer(416, headers, None)
            case None:
                pass
    return _new(Answer, (entry.status, headers, body))  # Answer(...), at half the cost


def client_headers(headers: Headers, route: RouteConfig) -> HeaderList:
    """``headers`` as sent to clients on a cacheable response of ``route``: its
    ``client_cache_control``, when set, replaces the app's ``Cache-Control``."""
    override = route.client_cache_control
    if override is None:
        return list(headers)
    out = [(n, v) for n, v in headers if n.lower() != "cache-control"]
    out.append(("Cache-Control", override))
    return out


def streamed_head(stream: Stream, route: RouteConfig) -> HeaderList:
    """The headers of a miss streamed from the app as it arrives (``X-Cache: MISS``).

    No ``stored`` in ``Cache-Status`` (RFC 9211: the response was stored): the
    head goes out before the body is read, and the body may yet turn out too
    large, be cut short or be purged. Whether it was stored, the next request shows."""
    head = stream.head
    # Keyed on Accept-Encoding if encoded: said so to caches in front, too.
    kept = h.with_via(vary_on_coding(head.headers))
    headers = client_headers(kept, route) if head.storable else list(kept)
    status = h.cache_status(hit=False, fwd=stream.fwd, fwd_status=head.status)
    headers += (("X-Cache", "MISS"), ("Cache-Status", status))
    return headers


def validators_only(headers: HeaderList) -> HeaderList:
    """The headers of a 304 (RFC 9110 section 15.4.5) or 412 answered from an entry,
    with this proxy's own and the app's ``Server`` if it sent one."""
    return [(n, v) for n, v in headers if n.lower() in _NOT_MODIFIED_HEADERS or n.lower() in _OURS]
