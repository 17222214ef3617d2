"""Cache decisions: may this request use the cache, may this response be stored,
and how fresh is an entry.

Every decision is a value: ``decide`` returns a ``Lookup`` or a ``Bypass``;
``store_refusal`` returns the reason a response may not be stored, or None;
``freshness`` classifies an entry at a given instant. Time is an argument.
Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from proxy import headers as h
from proxy.entry import Body, Headers, StoredResponse
from proxy.keys import (
    build_key,
    credential_digest,
    normalise_accept_encoding,
    resolutions,
    select_query,
    variant_key,
)

if TYPE_CHECKING:
    from proxy.config import RouteConfig


class RequestHeaders(Protocol):
    """The read-only view of request headers the policy needs (a CIMultiDictProxy fits)."""

    def get(self, key: str, /) -> str | None: ...

    def getall(self, key: str, default: list[str], /) -> list[str]: ...

    def __contains__(self, key: object, /) -> bool: ...


class BypassReason(enum.Enum):
    NO_ROUTE = "no-route"
    METHOD = "method"
    CREDENTIALS = "credentials"
    AMBIGUOUS = "ambiguous-target"
    REQUEST_BODY = "request-body"
    # ``Connection`` names a header the key holds: the hop would lose an input
    # that the key says the app saw.
    CONNECTION = "connection-option"


# Decisions are immutable values. NamedTuple rather than a frozen dataclass: one
# is built per request, and a frozen dataclass's __init__ (object.__setattr__
# per field) cost about 1 % of a hit (py-spy on bench/run.py).
class Lookup(NamedTuple):
    """Serve from the cache if possible, else fill it. ``target`` is what goes upstream."""

    route: RouteConfig
    key: str
    path: str
    target: str
    head: bool
    # The request asks for a byte range: served from a stored entry, but a miss is
    # forwarded as it is and never stored (a part is not the whole object).
    partial: bool = False
    # The app's Vary names learned for ``key`` (``store.vary_spec``): keyed through
    # the variant, so a fill may forward them.
    learned: tuple[str, ...] = ()


class Bypass(NamedTuple):
    """Forward unchanged and store nothing. ``invalidate`` names the paths whose
    entries a successful unsafe request drops."""

    reason: BypassReason
    route: RouteConfig | None
    invalidate: frozenset[str] | None = None


Decision = Lookup | Bypass

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CREDENTIALS = frozenset({"authorization", "cookie"})


def decide(
    route: RouteConfig | None,
    method: str,
    path: str | None,
    raw_query: str,
    headers: RequestHeaders,
    *,
    host: str,
    has_body: bool,
    raw_path: str | None = None,
) -> Decision:
    """Decide how to handle a request. ``path`` is the normalised path, None if
    ambiguous; ``raw_path`` the path as received, which an unsafe request
    invalidates under every path the app may resolve it to (``keys.resolutions``)."""
    invalidate: frozenset[str] | None = None
    if method not in SAFE_METHODS:
        if raw_path is not None:
            invalidate = resolutions(raw_path)
        elif path is not None:
            invalidate = frozenset({path})
    if path is None:
        return Bypass(BypassReason.AMBIGUOUS, None, invalidate)
    if route is None:
        return Bypass(BypassReason.NO_ROUTE, None, invalidate)
    if method not in route.methods:
        return Bypass(BypassReason.METHOD, route, invalidate)
    if has_body:
        # A body the key does not see could shape the response (RFC 9110 9.3.1).
        return Bypass(BypassReason.REQUEST_BODY, route)
    creds: str | None = None
    if "Authorization" in headers or "Cookie" in headers:
        if route.credentials == "bypass":
            return Bypass(BypassReason.CREDENTIALS, route)
        if route.credentials == "per-user":
            # Every line, as every line is forwarded.
            creds = credential_digest(
                headers.getall("Authorization", []), headers.getall("Cookie", [])
            )
    if (route.vary or creds is not None) and "Connection" in headers:
        # Only routes whose key holds request headers pay for this.
        keyed = frozenset(route.vary) | (_CREDENTIALS if creds is not None else frozenset())
        named = h.connection_tokens(("connection", v) for v in headers.getall("Connection", []))
        if named & keyed:
            return Bypass(BypassReason.CONNECTION, route)
    query = select_query(raw_query, route.query)
    if query is None:
        return Bypass(BypassReason.AMBIGUOUS, route)
    target = f"{path}?{query}" if query else path
    vary = [(name, _value(name, headers)) for name in route.vary] if route.vary else ()
    key = build_key(route.name, host, target, vary, creds)
    return Lookup(route, key, path, target, method == "HEAD", headers.get("Range") is not None)


def _joined(values: list[str]) -> str | None:
    return ", ".join(values) if values else None


def _value(name: str, headers: RequestHeaders) -> str | None:
    """A request's value of header ``name`` as a key holds it."""
    joined = _joined(headers.getall(name, []))
    return normalise_accept_encoding(joined) if name == "accept-encoding" else joined


class NoStore(enum.Enum):
    """Why a response was not stored."""

    STATUS = "status"
    SET_COOKIE = "set-cookie"
    NO_STORE = "no-store"
    PRIVATE = "private"
    NO_CACHE = "no-cache"
    VARY = "vary"
    CONTENT_TYPE = "content-type"
    TOO_LARGE = "too-large"
    MEMORY = "memory"  # bodies of unknown length being filled hold their allowance


def store_refusal(
    route: RouteConfig,
    status: int,
    headers: Headers,
    *,
    content_length: int | None,
    max_object_bytes: int,
) -> NoStore | None:
    """Why the response may not be stored, or None if it may (body size permitting)."""
    if status not in route.statuses or status in (206, 304):
        return NoStore.STATUS
    if h.get(headers, "set-cookie") is not None:
        return NoStore.SET_COOKIE
    cc = h.cache_control_directives(h.get_all(headers, "cache-control"))
    if "no-store" in cc:
        return NoStore.NO_STORE
    if "private" in cc:
        return NoStore.PRIVATE
    if "no-cache" in cc:
        # Stored responses are served without revalidation, which no-cache forbids.
        return NoStore.NO_CACHE
    vary = response_vary(headers)
    if "*" in vary or (vary - set(route.vary)) & h.PROXY_CONTROLLED:
        # Vary: * matches no later request; and a header the proxy sets or strips
        # has, upstream, a value the client's request does not show.
        return NoStore.VARY
    if route.content_types is not None and not content_type_allowed(
        h.get(headers, "content-type"), route.content_types
    ):
        return NoStore.CONTENT_TYPE
    if content_length is not None and content_length > max_object_bytes:
        return NoStore.TOO_LARGE
    return None


def response_vary(headers: Headers) -> frozenset[str]:
    """The request headers a response's ``Vary`` names, lower-cased."""
    names = {v.strip().lower() for value in h.get_all(headers, "vary") for v in value.split(",")}
    return frozenset(names - {""})


def variant_of(lookup_key: str, vary: tuple[str, ...], headers: RequestHeaders) -> str:
    """The variant key for a request, given the ``Vary`` names learned for its key."""
    return variant_key(lookup_key, vary, [_value(n, headers) for n in vary])


def content_type_allowed(content_type: str | None, allowed: tuple[str, ...]) -> bool:
    if content_type is None:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    major = mime.partition("/")[0]
    return any(a == mime or a == f"{major}/*" for a in allowed)


# Headers a hit states afresh: never stored from the upstream's response.
_RESTATED = frozenset({"age", "etag", "x-cache"})


def build_entry(
    lookup: Lookup,
    status: int,
    headers: Headers,
    body: Body,
    *,
    now: float,
    request_headers: RequestHeaders | None = None,
    wall: float | None = None,
    requested_at: float | None = None,
) -> StoredResponse:
    """The entry to store for a complete response fetched for ``lookup``.

    ``now`` is monotonic time; ``wall`` the wall clock (``time.time()``) at the same
    instant, against which the app's ``Date`` and ``Expires`` are read; and
    ``requested_at`` the monotonic time the upstream request was sent (RFC 9111
    section 4.2.3, response delay).

    A response with ``Vary`` is one variant: its key adds the values that
    ``request_headers`` (the request that was forwarded) had for those names.
    """
    route = lookup.route
    names = response_vary(headers)
    if _encoded(headers):
        # An encoded answer suits only clients that accept its coding, whether or
        # not the app said ``Vary: Accept-Encoding`` (aiohttp's compression does not).
        names = names | {"accept-encoding"}
        headers = vary_on_coding(headers)
    vary = tuple(sorted(names - set(route.vary)))
    key = lookup.key
    if vary:
        assert request_headers is not None, "a Vary response needs its request's headers"
        key = variant_of(lookup.key, vary, request_headers)
    etag = h.get(headers, "etag") or h.compute_etag(body)
    initial_age = _parse_age(h.get(headers, "age"))
    # Stored as served: the validator and this proxy's Via are part of the entry,
    # so that a hit only adds what changes with time (Age, Cache-Status).
    kept = h.with_via((*((n, v) for n, v in headers if n.lower() not in _RESTATED), ("ETag", etag)))
    fresh_until = now + route.ttl
    return StoredResponse(
        key=key,
        route=route.name,
        path=lookup.path,
        status=status,
        headers=kept,
        body=body,
        etag=etag,
        stored_at=now,
        fresh_until=fresh_until,
        stale_until=fresh_until + max(route.stale_while_revalidate, route.stale_if_error),
        initial_age=initial_age,
        vary=vary,
        base_key=lookup.key,
        origin_etag=h.get(headers, "etag"),
        last_modified=h.get(headers, "last-modified"),
    )


def _encoded(headers: Headers) -> bool:
    coding = h.get(headers, "content-encoding")
    return coding is not None and coding.strip().lower() not in ("", "identity")


def vary_on_coding(headers: Headers) -> Headers:
    """``headers`` of a response with ``Accept-Encoding`` added to its ``Vary`` when
    its body has a content coding and the app did not say so: sidecache keys such an
    answer on ``Accept-Encoding`` (``build_entry``), and a cache in front of it must
    too, or it would serve the coding to clients that do not accept it. Merged into
    the first ``Vary`` line, since some caches read only one."""
    if not _encoded(headers):
        return headers
    names = response_vary(headers)
    if "accept-encoding" in names or "*" in names:
        return headers
    out: list[tuple[str, str]] = []
    merged = False
    for name, value in headers:
        if not merged and name.lower() == "vary":
            value = f"{value}, Accept-Encoding" if value.strip() else "Accept-Encoding"
            merged = True
        out.append((name, value))
    if not merged:
        out.append(("Vary", "Accept-Encoding"))
    return tuple(out)


def _parse_age(value: str | None) -> float:
    if value is None or not value.strip().isdigit():
        return 0.0
    return float(value.strip())


class Freshness(enum.Enum):
    FRESH = "fresh"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # may be served while one refresh runs
    STALE_IF_ERROR = "stale-if-error"  # may be served only if the upstream fails
    EXPIRED = "expired"


def freshness(entry: StoredResponse, route: RouteConfig, now: float) -> Freshness:
    """Classify ``entry`` at ``now`` using the route's current windows."""
    if now < entry.fresh_until:
        return Freshness.FRESH
    late = now - entry.fresh_until
    if late < route.stale_while_revalidate:
        return Freshness.STALE_WHILE_REVALIDATE
    if late < route.stale_if_error:
        return Freshness.STALE_IF_ERROR
    return Freshness.EXPIRED


def usable_on_error(entry: StoredResponse, route: RouteConfig, now: float) -> bool:
    """May ``entry`` stand in for a failed upstream request (``stale_if_error``)?"""
    return now - entry.fresh_until < route.stale_if_error


def age(entry: StoredResponse, now: float) -> int:
    """The ``Age`` header value (RFC 9111 section 4.2.3), in whole seconds."""
    return int(entry.initial_age + max(0.0, now - entry.stored_at))
