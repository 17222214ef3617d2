"""Cache decisions: may this request use the cache, may this response be stored,
and how fresh is an entry.

Every decision is a value: ``decide`` returns a ``Lookup`` or a ``Bypass``;
``store_refusal`` returns the reason a response may not be stored, or None;
``build_entry`` gives a stored response its lifetime; ``freshness`` classifies an
entry at a given instant. A route's ``freshness`` says who decides lifetimes:
``origin``, the app's headers as RFC 9111 reads them (``proxy.freshness``), with
the route's ``ttl`` as the default; ``route``, the route's ``ttl`` alone. Time is
an argument. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from proxy import headers as h
from proxy.entry import Body, Headers, StoredResponse
from proxy.freshness import (
    HEURISTICALLY_CACHEABLE,
    UNDERSTOOD_STATUSES,
    Assessment,
    Basis,
    assess,
    from_cache_control,
    parse_age,
)
from proxy.keys import (
    build_key,
    credential_digest,
    normalise_field,
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
    # A WebSocket handshake: tunnelled to the app, never a cache lookup.
    UPGRADE = "upgrade"


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
    # The request carries ``Authorization`` on an ``origin`` route without an
    # explicit ``credentials``: its response is stored only if it says it may be
    # shared (RFC 9111 section 3.5, ``store_refusal``).
    authorized: bool = False


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
    forwarded: Sequence[tuple[str, str]] = (),
) -> Decision:
    """Decide how to handle a request. ``path`` is the normalised path, None if
    ambiguous; ``raw_path`` the path as received, which an unsafe request
    invalidates under every path the app may resolve it to (``keys.resolutions``).
    ``forwarded`` holds a trusted peer's forwarding headers (``keys.forwarded_inputs``),
    which the app sees on a fill and so join the key."""
    if (
        method == "GET"
        and "Upgrade" in headers
        and h.websocket_upgrade(headers.get("Connection"), headers.get("Upgrade"))
    ):
        return Bypass(BypassReason.UPGRADE, route)
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
    authorized = False
    if "Authorization" in headers or "Cookie" in headers:
        credentials = route.credentials
        if credentials is None:
            # Unset: an ``origin`` route follows RFC 9111 section 3.5 for
            # Authorization; a Cookie, of which HTTP caching says nothing but which
            # apps read without saying Vary, bypasses as on a ``route`` route.
            if route.freshness == "origin" and "Cookie" not in headers:
                authorized = True
            else:
                credentials = "bypass"
        if credentials == "bypass":
            return Bypass(BypassReason.CREDENTIALS, route)
        if credentials == "per-user":
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
    key = build_key(route.name, host, target, vary, creds, forwarded)
    return Lookup(
        route,
        key,
        path,
        target,
        method == "HEAD",
        headers.get("Range") is not None,
        authorized=authorized,
    )


def _joined(values: list[str]) -> str | None:
    return ", ".join(values) if values else None


def _value(name: str, headers: RequestHeaders) -> str | None:
    """A request's value of header ``name`` as a key holds it: field lines combined,
    then normalised (``keys.normalise_field``)."""
    return normalise_field(name, _joined(headers.getall(name, [])))


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
    # ``origin`` routes: nothing would let the response be reused (no lifetime, no
    # validator to revalidate it with, no stale window).
    NO_FRESHNESS = "no-freshness"
    # ``origin`` routes: the request carried Authorization and the response does
    # not say it may be shared (RFC 9111 section 3.5).
    AUTHORIZATION = "authorization"
    # ``origin`` routes: ``must-understand`` with a status whose caching rules
    # sidecache does not know (RFC 9111 section 5.2.2.3).
    MUST_UNDERSTAND = "must-understand"
    # ``cache.policy``'s admission kept it out: asked for less often than the
    # entries it would have pushed out (``store.MemoryLRUCache.rejected``).
    ADMISSION = "admission"


# Never stored as entries, whatever ``statuses`` says: not whole representations.
_NEVER_STORED = frozenset({206, 304})


def _listed(route: RouteConfig, status: int) -> bool:
    """Does ``statuses`` (or the mode's default for it) allow ``status``?"""
    if status in _NEVER_STORED:
        return False
    if route.statuses is not None:
        return status in route.statuses
    if route.freshness == "route":
        return status == 200
    return 200 <= status <= 599  # any final status; explicit freshness decides


def origin_assessment(
    route: RouteConfig,
    status: int,
    headers: Headers,
    *,
    wall: float | None = None,
    response_delay: float = 0.0,
) -> Assessment:
    """What the app's headers say about reusing this response on an ``origin``
    route: the route's ``ttl`` is the lifetime when they give none, for the statuses
    ``statuses`` lists, or when it is unset the heuristically cacheable ones."""
    return assess(
        status,
        headers,
        response_time=wall,
        response_delay=response_delay,
        default_ttl=route.ttl,
        implicit=route.statuses if route.statuses is not None else HEURISTICALLY_CACHEABLE,
    )


def has_validator(headers: Headers) -> bool:
    """Did the app send a validator a conditional request could ask with?"""
    return h.get(headers, "etag") is not None or h.get(headers, "last-modified") is not None


def store_refusal(
    route: RouteConfig,
    status: int,
    headers: Headers,
    *,
    content_length: int | None,
    max_object_bytes: int,
    authorized: bool = False,
    wall: float | None = None,
) -> NoStore | None:
    """Why the response may not be stored, or None if it may (body size permitting).

    ``authorized``: the request carried Authorization (``Lookup.authorized``).
    ``wall``: the wall clock when the response arrived, against which its ``Date``
    and ``Expires`` are read (without it, its own ``Date`` stands for it)."""
    if not _listed(route, status):
        return NoStore.STATUS
    if h.get(headers, "set-cookie") is not None:
        return NoStore.SET_COOKIE
    assessment: Assessment | None = None
    if route.freshness == "route":
        d = from_cache_control(h.get_all(headers, "cache-control"))
    else:
        assessment = origin_assessment(route, status, headers, wall=wall)
        d = assessment.directives
    if assessment is not None and d.must_understand:
        # RFC 9111 section 5.2.2.3: only a cache that knows the status's rules may
        # store it, and one that does ignores no-store.
        if status not in UNDERSTOOD_STATUSES:
            return NoStore.MUST_UNDERSTAND
    elif d.no_store:
        return NoStore.NO_STORE
    if d.private:
        return NoStore.PRIVATE
    if assessment is None and d.no_cache:
        # A ``route`` route serves stored responses without revalidation, which
        # no-cache forbids.
        return NoStore.NO_CACHE
    if authorized and not d.shareable_with_credentials:
        return NoStore.AUTHORIZATION
    vary = response_vary(headers)
    if "*" in vary or (vary - set(route.vary)) & h.PROXY_CONTROLLED:
        # Vary: * matches no later request; and a header the proxy sets or strips
        # has, upstream, a value the client's request does not show.
        return NoStore.VARY
    if route.content_types is not None and not content_type_allowed(
        h.get(headers, "content-type"), route.content_types
    ):
        return NoStore.CONTENT_TYPE
    if assessment is not None:
        if assessment.basis is Basis.UNCACHEABLE:
            return NoStore.STATUS
        if not _reusable(assessment, route, has_validator(headers)):
            return NoStore.NO_CACHE if d.no_cache else NoStore.NO_FRESHNESS
    if content_length is not None and content_length > max_object_bytes:
        return NoStore.TOO_LARGE
    return None


def _reusable(a: Assessment, route: RouteConfig, validator: bool) -> bool:
    """Could a stored copy ever be served: fresh for a while, revalidated with its
    validator, or served stale within a window the app does not forbid?"""
    if a.fresh_for > 0 or validator:
        return True
    d = a.directives
    windows = (
        route.stale_while_revalidate,
        route.stale_if_error,
        d.stale_while_revalidate,
        d.stale_if_error,
    )
    return not d.no_stale and max(windows) > 0


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
    origin_etag = h.get(headers, "etag")
    etag = origin_etag or h.compute_etag(body)
    # Stored as served: the validator and this proxy's Via are part of the entry,
    # so that a hit only adds what changes with time (Age, Cache-Status).
    kept = h.with_via((*((n, v) for n, v in headers if n.lower() not in _RESTATED), ("ETag", etag)))
    entry = StoredResponse(
        key=key,
        route=route.name,
        path=lookup.path,
        status=status,
        headers=kept,
        body=body,
        etag=etag,
        stored_at=now,
        fresh_until=now,
        stale_until=now,
        initial_age=parse_age(h.get_all(headers, "age")) or 0.0,
        vary=vary,
        base_key=lookup.key,
    )
    if route.freshness == "route":
        # The route's ttl, whatever the app says; its validators are not kept
        # either, so that nothing of its headers is trusted.
        assert route.ttl is not None, "config: a route route has a ttl"
        fresh_until = now + route.ttl
    else:
        # The response delay counts from the request to the last byte: a little
        # more than RFC 9111 section 4.2.3 asks, which errs towards staleness.
        delay = max(0.0, now - requested_at) if requested_at is not None else 0.0
        a = origin_assessment(route, status, headers, wall=wall, response_delay=delay)
        d = a.directives
        fresh_until = now + a.fresh_for
        entry = replace(
            entry,
            initial_age=a.age,
            must_revalidate=d.no_stale,
            stale_while_revalidate=d.stale_while_revalidate,
            stale_if_error=d.stale_if_error,
            origin_etag=origin_etag,
            last_modified=h.get(headers, "last-modified"),
            origin_lifetime=a.basis is not Basis.DEFAULT or d.no_cache,
        )
    stale_until = _stale_until(
        entry, fresh_until, max(route.stale_while_revalidate, route.stale_if_error)
    )
    return replace(entry, fresh_until=fresh_until, stale_until=stale_until)


# How long past its stale windows an entry with a validator is kept, so that a
# conditional request can refresh it instead of a whole fill (the LRU evicts it
# sooner if the budget needs the room). nginx keeps entries 10 minutes after their
# last use by default (``inactive``), Squid until evicted.
REVALIDATION_KEEP = 3600.0


def _stale_until(entry: StoredResponse, fresh_until: float, route_stale: float) -> float:
    """The last instant ``entry`` can be of use: its longest stale window past
    ``fresh_until`` (none if it must be revalidated), or ``REVALIDATION_KEEP`` if
    it has a validator."""
    windows = (
        0.0
        if entry.must_revalidate
        else max(route_stale, entry.stale_while_revalidate, entry.stale_if_error)
    )
    validator = entry.origin_etag is not None or entry.last_modified is not None
    keep = REVALIDATION_KEEP if validator else 0.0
    return fresh_until + max(windows, keep)


def retimed(entry: StoredResponse, ttl: float | None, stale: float) -> tuple[float, float]:
    """``(fresh_until, stale_until)`` of ``entry`` under a route's current ``ttl`` and
    longest stale window (a reload): a lifetime the route gave is counted again from
    when the entry was stored; one the app gave is kept."""
    fresh_until = entry.fresh_until
    if ttl is not None and not entry.origin_lifetime:
        fresh_until = entry.stored_at + ttl
    return fresh_until, _stale_until(entry, fresh_until, stale)


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


class Freshness(enum.Enum):
    FRESH = "fresh"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # may be served while one refresh runs
    STALE_IF_ERROR = "stale-if-error"  # may be served only if the upstream fails
    EXPIRED = "expired"


def stale_windows(entry: StoredResponse, route: RouteConfig) -> tuple[float, float]:
    """``(stale_while_revalidate, stale_if_error)`` that apply to ``entry``: the
    route's current ones, extended by the app's own (RFC 5861); none at all when
    the app forbids serving it stale (``StoredResponse.must_revalidate``)."""
    if entry.must_revalidate:
        return 0.0, 0.0
    return (
        max(route.stale_while_revalidate, entry.stale_while_revalidate),
        max(route.stale_if_error, entry.stale_if_error),
    )


def freshness(entry: StoredResponse, route: RouteConfig, now: float) -> Freshness:
    """Classify ``entry`` at ``now`` using the route's current windows."""
    if now < entry.fresh_until:
        return Freshness.FRESH
    late = now - entry.fresh_until
    while_revalidate, if_error = stale_windows(entry, route)
    if late < while_revalidate:
        return Freshness.STALE_WHILE_REVALIDATE
    if late < if_error:
        return Freshness.STALE_IF_ERROR
    return Freshness.EXPIRED


def usable_on_error(entry: StoredResponse, route: RouteConfig, now: float) -> bool:
    """May ``entry`` stand in for a failed upstream request (fresh, or within
    ``stale_if_error``)?"""
    return now - entry.fresh_until < stale_windows(entry, route)[1]


def age(entry: StoredResponse, now: float) -> int:
    """The ``Age`` header value (RFC 9111 section 4.2.3), in whole seconds."""
    return int(entry.initial_age + max(0.0, now - entry.stored_at))
