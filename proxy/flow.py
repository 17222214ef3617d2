"""A request's life in the cache, as decisions: what to do at each step, never how.

The driver (``handler.py``, ``fill.py``) asks one question per step and acts on
the value it gets back:

- ``on_lookup``: an entry was looked up (or none found) for a ``policy.Lookup``:
  ``Serve`` it (fresh), serve it stale while one background request refreshes it
  (``StaleWhileRevalidate``), ``Revalidate`` it with a conditional request,
  ``Fetch`` (fill) the object, or ``Forward`` the request as it is;
  ``on_shared`` the same once the shared tier was asked.
- ``on_response``: the app answered a fill: ``Keep`` the body (to store it),
  ``Refresh`` the stale entry with a ``304`` (RFC 9111 section 4.3.4), or
  ``Refuse`` to store it, with the reason.
- ``on_head``: what the client whose miss started a fill does with its first
  news: stream the app's answer (``Stream``), or serve an entry instead (one
  refreshed or found in the shared tier, or a stale one standing in for a 5xx).
- ``lead_result`` / ``follow_result``: what a client gets from a finished fill
  (the leader waiting for the entry to evaluate its preconditions, or a follower).
- ``on_failure``: the app could not be asked or failed: a stale entry stands in,
  or the request ``Fail``s with a status.

Request-level decisions (lookup or bypass, the key) are ``policy.decide``; what is
stored and how fresh it is are ``policy``'s too. Time is an argument. Pure:
imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from proxy import headers as h
from proxy.entry import Headers, StoredResponse
from proxy.policy import (
    Freshness,
    Lookup,
    NoStore,
    RequestHeaders,
    freshness,
    store_refusal,
    usable_on_error,
    variant_of,
)

if TYPE_CHECKING:
    from proxy.config import RouteConfig


class Served(enum.Enum):
    """How a response served from an entry came to be (its ``X-Cache`` and
    ``Cache-Status``, ``answer.py``)."""

    HIT = "hit"  # fresh, not forwarded
    STALE = "stale"  # stale: a refresh runs, or the app failed
    MISS = "miss"  # the entry this request's own fill stored
    REVALIDATED = "revalidated"  # stale, forwarded, and refreshed by a 304


class Lead(enum.Enum):
    """How the client whose miss starts a fill gets its answer."""

    STREAM = "stream"  # the app's answer, streamed as it arrives
    # ``If-Match`` / ``If-Unmodified-Since``: the fill is made without them; the
    # client waits for the stored entry and is answered from it (RFC 9110 13.2.2).
    FROM_ENTRY = "from-entry"


# Decisions are NamedTuples: one is built per request, and a frozen dataclass's
# __init__ costs more on the hit path.
class Serve(NamedTuple):
    """Answer from ``entry``; ``detail`` joins its ``Cache-Status``."""

    entry: StoredResponse
    served: Served = Served.HIT
    detail: str | None = None


class StaleWhileRevalidate(NamedTuple):
    """Serve ``entry`` stale at once; one background fill refreshes it, sending
    ``conditions`` (the entry's validators: a 304 keeps its body)."""

    entry: StoredResponse
    conditions: Headers


class Revalidate(NamedTuple):
    """Fill with ``conditions`` (the stale entry's validators): a 304 refreshes
    ``stale``, any other answer replaces it; ``stale`` stands in if the app fails."""

    stale: StoredResponse
    conditions: Headers
    lead: Lead


class Fetch(NamedTuple):
    """Fill; ``stale`` (an expired entry without validators) stands in if the app
    fails. ``conditions``: the client's own ``If-None-Match`` / ``If-Modified-Since``
    when the cache has nothing to validate against; the app decides, and its 304
    goes to that client and is never stored."""

    stale: StoredResponse | None
    conditions: Headers
    lead: Lead


class Forward(NamedTuple):
    """Pass the request through as it is (``X-Cache: MISS``), storing nothing."""

    fwd: str  # RFC 9211 ``fwd``: why the cache forwarded it
    detail: str | None = None


OnLookup = Serve | StaleWhileRevalidate | Revalidate | Fetch | Forward

_RANGE_MISS = Forward("uri-miss", "range")
# The hit path's values: a NamedTuple's generated __new__ costs twice
# tuple.__new__, and an Enum member read through its class three times a global.
_new = tuple.__new__
_HIT = Served.HIT
_PRECONDITIONS = ("If-Match", "If-Unmodified-Since")
_CLIENT_CONDITIONS = ("If-None-Match", "If-Modified-Since")


def on_lookup(
    entry: StoredResponse | None, lookup: Lookup, headers: RequestHeaders, now: float
) -> OnLookup:
    """What to do with the entry found for ``lookup`` (None: nothing stored)."""
    if entry is not None:
        if now < entry.fresh_until:
            # policy.freshness's FRESH, read here: the hit path's one test
            # (test_flow checks that the two agree).
            return _new(Serve, (entry, _HIT, None))  # Serve(entry), at half the cost
        state = freshness(entry, lookup.route, now)
        if state is Freshness.STALE_WHILE_REVALIDATE:
            return StaleWhileRevalidate(entry, validators(entry))
    if lookup.partial:
        # A part is not the whole object: forwarded, never stored.
        return _RANGE_MISS
    lead = Lead.FROM_ENTRY if any(n in headers for n in _PRECONDITIONS) else Lead.STREAM
    if entry is not None:
        conditions = validators(entry)
        if conditions:
            return Revalidate(entry, conditions, lead)
        return Fetch(entry, (), lead)
    if lead is Lead.FROM_ENTRY:
        return Fetch(None, (), lead)
    # Nothing stored to validate against: the client's own conditions go to the
    # app (RFC 9111 section 4.3.1), which answers them; a 304 is never stored.
    return Fetch(None, client_conditions(headers), lead)


def on_shared(
    found: StoredResponse | None,
    step: Revalidate | Fetch,
    lookup: Lookup,
    headers: RequestHeaders,
    now: float,
) -> OnLookup:
    """``step`` was decided on the in-process tier; ``found`` is what the shared tier
    had. Its fresh entry is served; otherwise a stale in-process entry keeps its
    decision, and without one the shared tier's entry is decided on as if found
    in-process (revalidated, or served while a refresh runs)."""
    if found is None:
        return step
    again = on_lookup(found, lookup, headers, now)
    if isinstance(again, Serve):
        return Serve(found, Served.HIT, "shared")
    return step if step.stale is not None else again


def validators(entry: StoredResponse) -> Headers:
    """The conditional headers that revalidate ``entry`` (RFC 9111 section 4.3.1):
    the app's own validators, as it sent them; never an ETag sidecache computed."""
    out: list[tuple[str, str]] = []
    if entry.origin_etag:
        out.append(("If-None-Match", entry.origin_etag))
    if entry.last_modified:
        out.append(("If-Modified-Since", entry.last_modified))
    return tuple(out)


def client_conditions(headers: RequestHeaders) -> Headers:
    """The client's own ``If-None-Match`` / ``If-Modified-Since`` lines, as sent."""
    return tuple((name, value) for name in _CLIENT_CONDITIONS for value in headers.getall(name, []))


# -- the fill's answer -----------------------------------------------------------------


class Keep(NamedTuple):
    """Read the body and store it if it stays within the limits."""


class Refresh(NamedTuple):
    """A 304 to the revalidation of ``entry``: store ``headers`` (the stored ones
    updated from the 304, RFC 9111 section 3.2) with the stored body."""

    entry: StoredResponse
    headers: Headers


class Refuse(NamedTuple):
    """The answer may not be stored: relay it, and each waiter fetches for itself."""

    reason: NoStore


OnResponse = Keep | Refresh | Refuse


def on_response(
    lookup: Lookup,
    status: int,
    headers: Headers,
    *,
    content_length: int | None,
    max_object_bytes: int,
    revalidating: StoredResponse | None,
    wall: float | None = None,
) -> OnResponse:
    """What a fill does with the app's answer (``headers`` as kept for the client;
    ``wall``: the wall clock when it arrived, ``policy.store_refusal``)."""
    route = lookup.route
    if status == 304 and revalidating is not None:
        merged = refreshed_headers(revalidating, headers)
        refusal = store_refusal(
            route,
            revalidating.status,
            merged,
            content_length=len(revalidating.body),
            max_object_bytes=max_object_bytes,
            authorized=lookup.authorized,
            wall=wall,
        )
        if refusal is not None:
            # The refreshed response may no longer be shared (it now says
            # ``no-store``, ``private``, sets a cookie...).
            return Refuse(refusal)
        return Refresh(revalidating, merged)
    refusal = store_refusal(
        route,
        status,
        headers,
        content_length=content_length,
        max_object_bytes=max_object_bytes,
        authorized=lookup.authorized,
        wall=wall,
    )
    return Keep() if refusal is None else Refuse(refusal)


# RFC 9111 section 3.2: fields a 304 does not update. Framing is each hop's own
# (hop-by-hop fields never reach here); the rest describe the stored bytes (their
# length, range, coding, digest and validator), which a 304 does not change: the
# section lets a cache keep what assures the stored response's integrity, and the
# http-cache-tests suite requires these five kept.
_NOT_UPDATED = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "content-range",
        "content-encoding",
        "content-md5",
        "etag",
    }
)


def refreshed_headers(entry: StoredResponse, not_modified: Headers) -> Headers:
    """The stored headers of ``entry`` updated from a 304 (RFC 9111 section 3.2):
    every field the 304 carries replaces the stored lines of that name, except
    ``_NOT_UPDATED`` (framing, and what describes the stored bytes). The result is
    the app's response as it now stands: the ETag sidecache computed (when the app
    sent none) and its own ``Via`` element are taken out, ``policy.build_entry``
    adds them again."""
    replaced = {n.lower() for n, _ in not_modified} - _NOT_UPDATED
    kept = [(n, v) for n, v in _as_received(entry) if n.lower() not in replaced]
    kept.extend((n, v) for n, v in not_modified if n.lower() in replaced)
    return tuple(kept)


def _as_received(entry: StoredResponse) -> Headers:
    """The stored headers without what ``build_entry`` added: the computed ETag and
    this proxy's element of ``Via``."""
    out: list[tuple[str, str]] = []
    for name, value in entry.headers:
        lname = name.lower()
        if lname == "etag" and value != entry.origin_etag:
            continue
        if lname == "via":
            hops = [hop.strip() for hop in value.split(",")]
            if hops and hops[-1] == h.VIA_VALUE:
                hops.pop()
            if not hops:
                continue
            value = ", ".join(hops)
        out.append((name, value))
    return tuple(out)


# -- what clients get from a fill --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """The app's response head on a fill; its body follows on the fill's relay."""

    status: int
    reason: str | None
    headers: Headers
    content_length: int | None
    storable: bool
    upstream_s: float  # time to the app's response head


class Source(enum.Enum):
    """Where a fill's entry came from."""

    FETCHED = "fetched"  # read from the app
    SHARED = "shared"  # another replica stored it in the shared tier
    REFRESHED = "refreshed"  # the stale entry, refreshed by a 304


@dataclass(frozen=True, slots=True)
class Stored:
    """The fill's entry (stored, unless a purge came first: still served to the
    clients that waited for it)."""

    entry: StoredResponse
    source: Source = Source.FETCHED
    upstream_s: float | None = None


@dataclass(frozen=True, slots=True)
class Pass:
    """The app's answer (``status``) may not be shared: each waiter fetches for itself."""

    reason: NoStore
    status: int


# What the client that started a fill hears first: a head whose body follows, or
# the entry at once (refreshed by a 304, or found in the shared tier).
First = Head | Stored
FillResult = Stored | Pass


class Stream(NamedTuple):
    """Stream the app's answer to the client as it arrives (``X-Cache: MISS``)."""

    head: Head
    fwd: str  # RFC 9211 ``fwd``: ``stale`` when it replaces a stale entry


def on_head(
    first: First, stale: StoredResponse | None, route: RouteConfig, now: float
) -> Stream | Serve:
    """The leader streams the app's answer, unless an entry answers it: the one the
    fill refreshed or found, or the stale one standing in for a 5xx."""
    if isinstance(first, Stored):
        return _from_fill(first, leader=True)
    if first.status >= 500:
        stand_in = _stand_in(stale, route, now, f"upstream-{first.status}")
        if stand_in is not None:
            return stand_in
    return Stream(first, "stale" if stale is not None else "uri-miss")


def lead_result(
    result: FillResult, stale: StoredResponse | None, route: RouteConfig, now: float
) -> Serve | Forward:
    """The leader that waited for the fill's entry (``Lead.FROM_ENTRY``)."""
    if isinstance(result, Pass):
        return _not_shared(result, stale, route, now)
    return _from_fill(result, leader=True)


def follow_result(
    result: FillResult,
    stale: StoredResponse | None,
    route: RouteConfig,
    now: float,
    headers: RequestHeaders,
) -> Serve | Forward:
    """A client that waited for another's fill."""
    if isinstance(result, Pass):
        return _not_shared(result, stale, route, now)
    entry = result.entry
    if entry.vary and variant_of(entry.base_key, entry.vary, headers) != entry.key:
        # The first fill of a key taught us it varies, on headers where this
        # client differs from the one who asked: not its answer.
        return Forward("vary-miss")
    return _from_fill(result, leader=False)


def _from_fill(stored: Stored, *, leader: bool) -> Serve:
    match stored.source:
        case Source.FETCHED:
            if leader:
                return Serve(stored.entry, Served.MISS)
            return Serve(stored.entry, Served.HIT, "coalesced")
        case Source.SHARED:
            return Serve(stored.entry, Served.HIT, "shared" if leader else "coalesced")
        case Source.REFRESHED:
            return Serve(stored.entry, Served.REVALIDATED, None if leader else "coalesced")


def _not_shared(
    result: Pass, stale: StoredResponse | None, route: RouteConfig, now: float
) -> Serve | Forward:
    """The stale copy stands in for a 5xx; otherwise the client asks for itself
    (hit-for-pass)."""
    if result.status >= 500:
        stand_in = _stand_in(stale, route, now, f"upstream-{result.status}")
        if stand_in is not None:
            return stand_in
    return Forward("uri-miss", result.reason.value)


# -- failures ----------------------------------------------------------------------


class Failure(NamedTuple):
    """The app could not be asked, or gave no complete answer."""

    status: int  # what the client gets without a stale copy: 502, 503 or 504
    reason: str  # one line, e.g. "upstream timed out"
    retry_after: int | None = None  # refused for want of an upstream slot


class Fail(NamedTuple):
    """Answer with our own error."""

    status: int
    reason: str
    retry_after: int | None


def on_failure(
    failure: Failure, stale: StoredResponse | None, route: RouteConfig, now: float
) -> Serve | Fail:
    """``stale_if_error``: a stale entry stands in; else our own error."""
    stand_in = _stand_in(stale, route, now, failure.reason.replace(" ", "-"))
    if stand_in is not None:
        return stand_in
    return Fail(failure.status, failure.reason, failure.retry_after)


def _stand_in(
    stale: StoredResponse | None, route: RouteConfig, now: float, why: str
) -> Serve | None:
    if stale is not None and usable_on_error(stale, route, now):
        return Serve(stale, Served.STALE, why)
    return None
