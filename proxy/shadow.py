"""Shadow mode: what the cache would have done, on routes that forward everything.

A ``mode: shadow`` route forwards every request unchanged, but each one is decided
as on a ``cache`` route by the same code: the key (``policy.decide``), what is
found and what it is worth (``flow.on_lookup``), whether the app's answer may be
stored and for how long (``flow.on_response``, ``policy.build_entry``). What would
be stored goes into an index: the cache's own policy (``budget.make_policy``),
charged what the cache would charge (``StoredResponse.size`` with the real
body's length), so it fills, evicts, admits and expires as the cache would
within the same budget. Its records keep the entry's metadata (key, headers,
validators, lifetimes), never a body.

The index's own memory is the records' size without their bodies; it is counted
(``overhead``) and bounded by ``cache.shadow_index_bytes``: beyond it the least
recently used records go (``capped``), and the figures may then undercount hits.

Time is an argument. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, NamedTuple, assert_never

from proxy import headers as h
from proxy.budget import DEFAULT_POLICY, BytePolicy, make_policy
from proxy.entry import Headers, StoredResponse
from proxy.flow import (
    Fetch,
    Forward,
    Keep,
    OnLookup,
    Refresh,
    Refuse,
    Revalidate,
    Serve,
    StaleWhileRevalidate,
    on_lookup,
    on_response,
)
from proxy.keys import loose_path
from proxy.policy import (
    Lookup,
    NoStore,
    RequestHeaders,
    build_entry,
    retimed,
    usable_on_error,
    variant_of,
)

if TYPE_CHECKING:
    from proxy.config import RouteConfig

# Lifetimes as ``store.Lifetimes``: route name -> (ttl, longest stale window).
Lifetimes = dict[str, tuple[float | None, float]]


@dataclass(slots=True)
class ShadowCounters:
    """One shadow route's figures since start."""

    hits: int = 0  # would have been answered from the cache (fresh, or revalidated by a 304)
    misses: int = 0
    stale: int = 0  # would have been answered stale (while revalidating, or on an app error)
    stored: int = 0  # answers that would have been stored
    not_stored: Counter[str] = field(default_factory=Counter)  # by ``NoStore`` reason
    saved_requests: int = 0  # requests the app would not have received
    saved_bytes: int = 0  # body bytes the app would not have sent

    def as_dict(self) -> dict[str, object]:
        lookups = self.hits + self.misses + self.stale
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
            "stored": self.stored,
            "not_stored": dict(sorted(self.not_stored.items())),
            "saved_requests": self.saved_requests,
            "saved_bytes": self.saved_bytes,
        }


@dataclass(frozen=True, slots=True)
class IndexFigures:
    """The index as the cache would be: its entries and their would-be bytes; and
    the index's own memory (``overhead``) against its bound."""

    entries: int
    bytes: int
    max_bytes: int
    evictions: int
    expired: int
    purged: int
    overhead: int
    max_overhead: int
    capped: int


class Watch(NamedTuple):
    """One forwarded request of a shadow route, followed to its answer: what the
    cache would have done with it (``ShadowIndex.answered``)."""

    lookup: Lookup
    step: OnLookup
    # The headers a fill would have sent (``handler._fill_headers``): they, not the
    # client's, say which variant a Vary answer would have been stored as.
    sent: RequestHeaders
    requested_at: float


class ShadowIndex:
    """The would-be cache of every shadow route, and their counters."""

    def __init__(
        self,
        max_bytes: int,
        max_overhead: int,
        max_object_bytes: int,
        policy: str = DEFAULT_POLICY,
    ) -> None:
        # The cache's own eviction policy (``cache.policy``): it fills, evicts and
        # admits as the cache would.
        self._lru: BytePolicy[StoredResponse] = make_policy(
            policy, max_bytes, on_remove=self._unindex
        )
        self.max_overhead = max_overhead
        self.max_object_bytes = max_object_bytes
        self.overhead = 0
        self.capped = 0
        self.routes: dict[str, ShadowCounters] = {}
        self._by_path: dict[str, set[str]] = {}  # loose path -> keys
        self._by_route: dict[str, set[str]] = {}
        # base key -> [Vary names of its latest variant, number of stored variants]
        self._vary: dict[str, list[object]] = {}
        self._lifetimes: Lifetimes | None = None

    # -- configuration -------------------------------------------------------------

    def apply(
        self,
        max_bytes: int,
        max_overhead: int,
        max_object_bytes: int,
        lifetimes: Lifetimes,
        shadow_routes: frozenset[str],
        now: float,
    ) -> None:
        """A (re)configuration: the budget, the bound, the routes' lifetimes (as
        ``store.apply_lifetimes``); the records of routes no longer in shadow go."""
        self.max_overhead = max_overhead
        self.max_object_bytes = max_object_bytes
        self._lru.resize(max_bytes, now)
        self._lifetimes = dict(lifetimes)
        for route in list(self._by_route):
            if route not in shadow_routes:
                self.purge("route", route)
        self._lru.retime(lambda _key, record: self._retimed(record), now)
        self._cap()

    # -- a request's life ------------------------------------------------------------

    def counters(self, route: str) -> ShadowCounters:
        found = self.routes.get(route)
        if found is None:
            found = self.routes[route] = ShadowCounters()
        return found

    def on_request(
        self,
        lookup: Lookup,
        headers: RequestHeaders,
        now: float,
        sent: Callable[[Lookup], RequestHeaders],
    ) -> Watch | None:
        """Decide a shadow route's request as the cache would and count it; the
        ``Watch`` to follow its answer with, or None when the cache would not have
        asked the app (a hit: nothing of its answer would be stored). ``sent``: the
        headers a fill for the lookup would send."""
        record, learned = self._find(lookup.key, headers, now)
        if learned is not None:
            lookup = lookup._replace(learned=learned)
        step = on_lookup(record, lookup, headers, now)
        counters = self.counters(lookup.route.name)
        if isinstance(step, Serve):
            counters.hits += 1
            counters.saved_requests += 1
            counters.saved_bytes += _body_size(step.entry)
            return None
        if isinstance(step, StaleWhileRevalidate):
            counters.stale += 1  # its refresh would have gone to the app instead
        else:
            counters.misses += 1
        return Watch(lookup, step, sent(lookup), now)

    def answered(
        self,
        watch: Watch,
        status: int,
        headers: Headers,
        *,
        content_length: int | None,
        now: float,
        wall: float | None,
    ) -> bool:
        """The app answered ``watch``'s request with this head; True if its body's
        length is needed to decide (``stored``)."""
        lookup, step = watch.lookup, watch.step
        stale = _stale_of(step)
        counters = self.counters(lookup.route.name)
        if status >= 500 and self._stands_in(stale, lookup.route, now):
            self.failed(watch, now)
            return False
        if isinstance(step, Forward):
            return False  # a range: a part is never stored
        revalidating = stale if status == 304 and isinstance(step, Revalidate) else None
        answer = on_response(
            lookup,
            status,
            headers,
            content_length=content_length,
            max_object_bytes=self.max_object_bytes,
            revalidating=revalidating,
            wall=wall,
        )
        match answer:
            case Refuse(reason):
                counters.not_stored[reason.value] += 1
                return False
            case Refresh(entry, merged):
                # A 304 to the client's own conditional request, with a stale record
                # to revalidate: the cache would have asked with the record's
                # validators and served its body, a hit whose body the app did not
                # send. Records keep no headers: the refreshed one has the 304's.
                size = _body_size(entry)
                self._revalidated(counters, step, size)
                self._keep(watch, entry.status, merged, size, now, wall)
                return False
            case Keep():
                return True
            case _:
                assert_never(answer)

    def stored(
        self,
        watch: Watch,
        status: int,
        headers: Headers,
        body_bytes: int,
        *,
        now: float,
        wall: float | None,
    ) -> None:
        """The whole body of a storable answer went through (``body_bytes`` long)."""
        counters = self.counters(watch.lookup.route.name)
        if body_bytes > self.max_object_bytes:
            counters.not_stored[NoStore.TOO_LARGE.value] += 1
            return
        stale = _stale_of(watch.step)
        if (
            isinstance(watch.step, Revalidate)
            and stale is not None
            and _same_validator(stale, headers)
        ):
            # The app's answer carries the validator the cache would have asked
            # with: it would have answered 304, and the stored body been served.
            self._revalidated(counters, watch.step, body_bytes)
        self._keep(watch, status, headers, body_bytes, now, wall)

    def failed(self, watch: Watch, now: float) -> None:
        """The app failed (no answer, or a 5xx): a stale entry within
        ``stale_if_error`` would have stood in."""
        stale = _stale_of(watch.step)
        if not isinstance(watch.step, StaleWhileRevalidate) and self._stands_in(
            stale, watch.lookup.route, now
        ):
            counters = self.counters(watch.lookup.route.name)
            counters.misses -= 1
            counters.stale += 1

    # -- purges and upkeep ---------------------------------------------------------------

    def purge(self, kind: str, value: str | None) -> int:
        """Follow a purge of the cache (``store.on_purge``): by path (every path of
        its loose form), route, or all."""
        if kind == "all":
            return self._lru.clear()
        if kind == "path" and value:
            keys = self._by_path.get(loose_path(value), set())
        elif kind == "route" and value:
            keys = self._by_route.get(value, set())
        else:
            return 0
        return sum(self._lru.delete(key) for key in list(keys))

    def sweep(self, now: float, limit: int | None = None) -> int:
        return self._lru.sweep(now, limit)

    def figures(self) -> IndexFigures:
        lru = self._lru
        return IndexFigures(
            entries=len(lru),
            bytes=lru.bytes_used,
            max_bytes=lru.max_bytes,
            evictions=lru.evictions,
            expired=lru.expired,
            purged=lru.purged,
            overhead=self.overhead,
            max_overhead=self.max_overhead,
            capped=self.capped,
        )

    def snapshot(self) -> dict[str, object]:
        """The ``/stats`` ``shadow`` section."""
        f = self.figures()
        return {
            "index": {
                "entries": f.entries,
                "bytes": f.bytes,
                "max_bytes": f.max_bytes,
                "evictions": f.evictions,
                "expired": f.expired,
                "purged": f.purged,
                "overhead_bytes": f.overhead,
                "max_overhead_bytes": f.max_overhead,
                "capped": f.capped,
            },
            "routes": {name: c.as_dict() for name, c in sorted(self.routes.items())},
        }

    # -- internals -------------------------------------------------------------------

    def peek(
        self, key: str, headers: RequestHeaders, now: float
    ) -> tuple[StoredResponse | None, tuple[str, ...] | None]:
        """``_find`` that changes nothing (no recency bump, no expiry): ``/explain``."""
        return self._find(key, headers, now, self._lru.peek)

    def _find(
        self,
        key: str,
        headers: RequestHeaders,
        now: float,
        get: Callable[[str, float], StoredResponse | None] | None = None,
    ) -> tuple[StoredResponse | None, tuple[str, ...] | None]:
        """As ``handler.Proxy._find``: the record for ``key``, or for its variant."""
        lookup = self._lru.get if get is None else get
        spec = self._vary.get(key)
        if spec is None:
            return lookup(key, now), None
        vary = spec[0]
        assert isinstance(vary, tuple)
        variant = variant_of(key, vary, headers)
        return lookup(variant, now) or lookup(key, now), vary

    def _stands_in(self, stale: StoredResponse | None, route: RouteConfig, now: float) -> bool:
        return stale is not None and usable_on_error(stale, route, now)

    def _revalidated(self, counters: ShadowCounters, step: OnLookup, body_bytes: int) -> None:
        """Counted a miss at the request, the answer shows a 304 would have done."""
        if isinstance(step, Revalidate):
            counters.misses -= 1
            counters.hits += 1
            counters.saved_bytes += body_bytes

    def _keep(
        self,
        watch: Watch,
        status: int,
        headers: Headers,
        body_bytes: int,
        now: float,
        wall: float | None,
    ) -> None:
        """Store the record of what the cache would have stored, charged its size."""
        record = build_entry(
            watch.lookup,
            status,
            headers,
            b"",
            now=now,
            request_headers=watch.sent,
            wall=wall,
            requested_at=watch.requested_at,
        )
        if self._lifetimes is not None:
            if record.route not in self._lifetimes:
                return
            again = self._retimed(record)
            if again is not None:
                record = again[0]
        counters = self.counters(record.route)
        # Charged what the cache would charge the entry (its headers and the body's
        # length), then kept without headers: what revalidation and freshness need
        # (validators, lifetimes, Vary) are fields of their own.
        charged = record.size + body_bytes
        record = Record(
            **{f.name: getattr(record, f.name) for f in fields(StoredResponse) if f.init},
            body_size=body_bytes,
        )
        record = replace(record, headers=())
        rejected = getattr(self._lru, "rejected", 0)
        result = self._lru.put(record.key, record, charged, record.stale_until, now)
        if not result.stored:
            if getattr(self._lru, "rejected", 0) > rejected:
                counters.not_stored[NoStore.ADMISSION.value] += 1
            return
        counters.stored += 1
        self.overhead += _own_size(record)
        self._by_path.setdefault(loose_path(record.path), set()).add(record.key)
        self._by_route.setdefault(record.route, set()).add(record.key)
        if record.vary:
            spec = self._vary.setdefault(record.base_key, [record.vary, 0])
            spec[0] = record.vary
            count = spec[1]
            assert isinstance(count, int)
            spec[1] = count + 1
        self._cap()

    def _cap(self) -> None:
        while self.overhead > self.max_overhead and len(self._lru):
            self._lru.evict_oldest()
            self.capped += 1

    def _retimed(self, record: StoredResponse) -> tuple[StoredResponse, float] | None:
        lifetime = self._lifetimes.get(record.route) if self._lifetimes is not None else None
        if lifetime is None:
            return None
        fresh_until, stale_until = retimed(record, *lifetime)
        if fresh_until == record.fresh_until and stale_until == record.stale_until:
            return None
        return replace(record, fresh_until=fresh_until, stale_until=stale_until), stale_until

    def _unindex(self, key: str, record: StoredResponse) -> None:
        self.overhead -= _own_size(record)
        if record.vary:
            spec = self._vary.get(record.base_key)
            if spec is not None:
                count = spec[1]
                assert isinstance(count, int)
                spec[1] = count - 1
                if count <= 1:
                    del self._vary[record.base_key]
        indexes = ((self._by_path, loose_path(record.path)), (self._by_route, record.route))
        for index, name in indexes:
            keys = index.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[name]


@dataclass(frozen=True, slots=True)
class Record(StoredResponse):
    """What the index keeps of a would-be entry: its metadata, without headers, and
    its body's length instead of the body."""

    body_size: int = 0


# The memory of one record beyond its strings (measured with tracemalloc on
# CPython 3.11 and rounded up: the record, its empty body, headers and wire, the
# LRU's node, its dict slot and expiry heap item, the path and route index sets):
# the strings are added by ``_own_size``.
RECORD_OVERHEAD = 1280
# A string of the record's own (a validator the app sent): its object beyond its text.
_STRING = 64


def _own_size(record: StoredResponse) -> int:
    """The memory a record takes, as counted against ``cache.shadow_index_bytes``."""
    return (
        RECORD_OVERHEAD
        + len(record.key)
        + 2 * len(record.path)  # and its loose form, in the path index
        + len(record.etag)
        + (_STRING + len(record.origin_etag) if record.origin_etag else 0)
        + (_STRING + len(record.last_modified) if record.last_modified else 0)
        + len(record.base_key)
    )


def _body_size(record: StoredResponse) -> int:
    return record.body_size if isinstance(record, Record) else 0


def _stale_of(step: OnLookup) -> StoredResponse | None:
    if isinstance(step, Revalidate | Fetch):
        return step.stale
    if isinstance(step, StaleWhileRevalidate):
        return step.entry
    return None


def _same_validator(stale: StoredResponse, headers: Headers) -> bool:
    """Would the app have answered the cache's conditional request with 304?"""
    etag = h.get(headers, "etag")
    if stale.origin_etag is not None:
        return etag is not None and etag == stale.origin_etag
    modified = h.get(headers, "last-modified")
    return stale.last_modified is not None and modified == stale.last_modified


class Follower:
    """Follows one shadow request's forwarded answer (``passthrough.Observer``) and
    tells the index what the cache would have done with it."""

    __slots__ = ("_clock", "_headers", "_index", "_status", "_wall", "_watch")

    def __init__(
        self,
        index: ShadowIndex,
        watch: Watch,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self._index = index
        self._watch = watch
        self._clock = clock
        self._wall = wall
        self._status = 0
        self._headers: Headers = ()

    def head(self, status: int, headers: Headers, content_length: int | None) -> bool:
        index, watch = self._index, self._watch
        wants = index.answered(
            watch,
            status,
            headers,
            content_length=content_length,
            now=self._clock(),
            wall=self._wall(),
        )
        if not wants:
            return False
        if watch.lookup.head:
            # The cache would have filled with GET: its body's length is what the
            # head says, or unknown (nothing is recorded then).
            if content_length is not None:
                index.stored(
                    watch, status, headers, content_length, now=self._clock(), wall=self._wall()
                )
            return False
        self._status, self._headers = status, headers
        return True

    def body(self, length: int) -> None:
        self._index.stored(
            self._watch, self._status, self._headers, length, now=self._clock(), wall=self._wall()
        )

    def failed(self) -> None:
        self._index.failed(self._watch, self._clock())
