"""The public-port handler: the driver of a request's life.

Resolves the request (host, path, route), asks ``policy.decide``, looks the key
up, asks the flow (``flow.py``) what to do with what it found, matches on the
answer and acts: serves an entry (``answer.py``), starts or joins a fill
(``fill.py``), or forwards (``passthrough.py``). Every response is accounted
once, in ``_done``: the counters by its ``X-Cache``, the latency, the access log.
The hit path stays in ``__call__``, without an extra coroutine: it is the one
that must be fast (bench/run.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, assert_never

from aiohttp import HttpVersion, HttpVersion11, web
from aiohttp.typedefs import RawHeaders
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import headers as h
from proxy import hitwire
from proxy.accesslog import ROUTE_KEY, SENT_KEY, STREAM_KEY, UPSTREAM_KEY, AccessLog
from proxy.admission import Admission
from proxy.answer import from_entry, streamed_head
from proxy.body import (
    SLICED_ABOVE,
    SlicedPayload,
    VerbatimResponse,
    VerbatimStreamResponse,
    send_interim,
    sliced_response,
)
from proxy.coalesce import Coalescer, Fill, Relay
from proxy.config import route_lifetimes
from proxy.entry import Body, Headers, StoredResponse
from proxy.fill import Filler
from proxy.flow import (
    Fail,
    Failure,
    Fetch,
    FillResult,
    First,
    Forward,
    Lead,
    OnLookup,
    Revalidate,
    Serve,
    Served,
    StaleWhileRevalidate,
    Stored,
    Stream,
    follow_result,
    lead_result,
    on_failure,
    on_head,
    on_lookup,
    on_shared,
)
from proxy.hitwire import ASKS_MORE, wire_head
from proxy.keys import (
    FORWARDED_KEYED,
    IPNetwork,
    forwarded_inputs,
    host_allowed,
    normalise_host,
    normalise_path,
    request_host,
    split_absolute,
    trusted_peer,
)
from proxy.pacing import BodyCopy
from proxy.passthrough import (
    Passthrough,
    copy_headers,
    plain,
    prepared,
    send_body,
    upstream_headers,
)
from proxy.policy import Bypass, BypassReason, Decision, Lookup, age, decide, variant_of
from proxy.routes import RouteTable
from proxy.shadow import Follower, ShadowIndex
from proxy.stats import CacheOutcome, Histogram, Stats
from proxy.tiers import Tiers
from proxy.tunnel import Tunnels
from proxy.upstream import Upstream, UpstreamBusy, UpstreamError

if TYPE_CHECKING:
    from proxy.config import Config, RouteConfig

log = logging.getLogger(__name__)

# What a client waits for on a fill: its first news, or its result.
_Awaited = TypeVar("_Awaited", First, FillResult)


class FastHit(NamedTuple):
    """A plain hit answered by the protocol (``Proxy.fast_hit``): the head to write,
    then the body (None for ``HEAD``)."""

    head: bytes
    body: Body | None
    status: int
    route: str
    started: float  # time.perf_counter() when the request was read


class Explained(NamedTuple):
    """``Proxy.explain``: the decision (None: refused with ``400``, ``target`` then
    says why), and for a lookup the in-process entry, the key it is (or would be)
    stored under, the ``Vary`` names learned for it and the flow's next step."""

    decision: Decision | None
    target: str
    now: float
    entry: StoredResponse | None = None
    key: str | None = None
    vary: tuple[str, ...] | None = None
    step: OnLookup | None = None
    # A shadow route's: the entry and step are the shadow index's (what the cache
    # would do); the request itself is forwarded.
    shadow: bool = False


# Requests whose plain-hit decision is remembered (``Proxy.fast_hit``), each at most
# FAST_MEMO_HEAD bytes of target and headers: at most about 2 MB, dropped whole
# when full like the memo below, and on every reload.
FAST_MEMO_SIZE = 1024
_Asked = tuple[str, str, RawHeaders, bool, str | None]
FAST_MEMO_HEAD = 2048

# What a shadow route's answers say (RFC 9211): forwarded, and why.
SHADOW_STATUS = h.cache_status(hit=False, fwd="bypass", detail="shadow")

# Distinct raw paths whose normalisation and route are remembered; the memo is
# dropped whole when full, so a scan of random paths costs a rebuild, not memory.
TARGET_MEMO_SIZE = 8192
_OUTCOMES = {outcome.value: outcome for outcome in CacheOutcome}


class Proxy:
    """The request handler of the public port (an aiohttp low-level handler)."""

    def __init__(
        self,
        config: Config,
        *,
        tiers: Tiers,
        upstream: Upstream,
        admission: Admission,
        stats: Stats,
        coalescer: Coalescer,
        access_out: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = tiers
        self._access_out = access_out  # where access lines go (``LineWriter.put``)
        self.stats = stats
        self.coalescer = coalescer
        self.clock = clock
        self.filler = Filler(
            config,
            tiers=tiers,
            upstream=upstream,
            admission=admission,
            coalescer=coalescer,
            stats=stats,
            clock=clock,
        )
        self.passthrough = Passthrough(
            config, upstream=upstream, admission=admission, tiers=tiers, stats=stats
        )
        self.tunnels = Tunnels(config.upstream.max_tunnels, upstream=upstream, stats=stats)
        # What the cache would hold on shadow routes; it follows every purge.
        self.shadow = ShadowIndex(
            config.cache.max_bytes,
            config.cache.shadow_index_bytes,
            config.cache.max_object_bytes,
            policy=tiers.local.policy,
        )
        tiers.local.on_purge(self.shadow.purge)
        self._date = hitwire.Clock()
        # The hit path's two calls, bound once.
        self._lookup = tiers.local.lookup
        self._vary_spec = tiers.local.vary_spec
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Switch to a new configuration; the cache and the counters stay."""
        self.config = config
        self.filler.apply(config)
        self.passthrough.apply(config)
        self.tunnels.trusted_proxies = config.server.trusted_proxies
        self.send_timeout = config.server.send_timeout
        self.access = AccessLog(config.log.access, config.log.sensitive_query, self._access_out)
        self._access_on = self.access.enabled
        # Read once per (re)configuration: a hit should not ask the logging tree.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.routes: RouteTable[RouteConfig] = RouteTable(config.routes)
        self.shadow.apply(
            self.tiers.local.figures().max_bytes,
            config.cache.shadow_index_bytes,
            config.cache.max_object_bytes,
            route_lifetimes(config),
            frozenset(r.name for r in config.routes if r.mode == "shadow"),
            self.clock(),
        )
        # raw path -> (normalised path, route). Both are pure functions of the raw
        # path and the route table, and together they cost about a fifth of a hit.
        self._targets: dict[str, tuple[str | None, RouteConfig | None]] = {}
        self._allowed_hosts = config.server.allowed_hosts
        self._trusted = config.server.trusted_proxies
        # raw Host -> normalised host, or "" when malformed or not allowed.
        self._hosts: dict[str, str] = {}
        # (method, target, raw headers, body, peer) -> the plain hit's lookup, or False.
        self._fast: dict[
            tuple[str, str, RawHeaders, bool, str | None], Lookup | Literal[False]
        ] = {}

    def _forwarded(
        self, headers: CIMultiDictProxy[str], remote: str | None
    ) -> tuple[tuple[str, str], ...]:
        """A trusted peer's forwarding headers, for the key; nothing from others.
        Cheap when the request carries none: the peer is looked at only if it does."""
        for name in FORWARDED_KEYED:  # a loop, not any(): this runs on every hit
            if name in headers:
                if not trusted_peer(remote, self._trusted):
                    return ()
                return forwarded_inputs(headers.items())
        return ()

    def _resolve(self, raw_path: str) -> tuple[str | None, RouteConfig | None]:
        """Normalise ``raw_path`` and find its route, memoised (bounded, reset on reload)."""
        found = self._targets.get(raw_path)
        if found is None:
            path = normalise_path(raw_path)
            match = self.routes.match(path) if path is not None else None
            found = (path, match.route if match is not None else None)
            if len(self._targets) >= TARGET_MEMO_SIZE:
                self._targets.clear()
            self._targets[raw_path] = found
        return found

    def _host(self, raw: str) -> str | None:
        """The normalised ``Host`` if it is well-formed and allowed, else None; memoised
        like ``_resolve`` (the public port speaks plain HTTP: port 80 is the default)."""
        found = self._hosts.get(raw)
        if found is None:
            host = normalise_host(raw)
            found = host if host is not None and host_allowed(host, self._allowed_hosts) else ""
            if len(self._hosts) >= TARGET_MEMO_SIZE:
                self._hosts.clear()
            self._hosts[raw] = found
        return found or None

    def _classify(
        self,
        method: str,
        raw: str,
        headers: CIMultiDictProxy[str],
        version: HttpVersion,
        body_exists: bool,
        remote: str | None,
    ) -> tuple[Decision, str] | tuple[None, str]:
        """The decision on a request and the target it sends upstream, or None and
        why it is refused with ``400``. Shared by ``__call__`` and ``fast_hit``."""
        host_header = headers.get("Host")
        host: str | None
        if raw.startswith("/"):
            raw_path, _, raw_query = raw.partition("?")
            target = raw
            if host_header is not None:
                host = self._host(host_header)
            else:
                # RFC 9112 section 3.2: an HTTP/1.1 request without Host is refused.
                host = "" if version < HttpVersion11 and not self._allowed_hosts else None
        else:
            # Absolute-form (RFC 9112 section 3.2.2): its authority replaces Host, and
            # it is keyed and forwarded like the same path sent with that Host.
            parts = split_absolute(raw)
            if parts is None:
                return None, "request target must be a path"
            target = parts[2]
            raw_path, _, raw_query = target.partition("?")
            host = request_host(raw, host_header)
            if host is not None and not host_allowed(host, self._allowed_hosts):
                host = None
        if host is None:
            return None, "unknown or malformed host"
        path, route = self._resolve(raw_path)
        decision = decide(
            route,
            method,
            path,
            raw_query,
            headers,
            host=host,
            has_body=body_exists,
            raw_path=raw_path,
            forwarded=self._forwarded(headers, remote) if route is not None else (),
        )
        if self._debug:
            log.debug("%s %s -> %s", method, raw_path if route else "-", decision)
        return decision, target

    def _find(
        self,
        key: str,
        headers: CIMultiDictProxy[str],
        now: float,
        get: Callable[[str, float], StoredResponse | None] | None = None,
    ) -> tuple[StoredResponse | None, str, tuple[str, ...] | None]:
        """The in-process entry for the lookup of ``key``, the key it is (or would be)
        stored under, and the app's ``Vary`` names learned for ``key`` (None: none).
        ``get`` replaces the store's ``lookup`` (``explain`` peeks)."""
        lookup = self._lookup if get is None else get
        vary = self._vary_spec(key)
        if vary is None:
            return lookup(key, now), key, None
        variant = variant_of(key, vary, headers)
        # An answer stored without Vary (under the base key) suits every client,
        # e.g. the identity one beside an implicit gzip variant.
        return lookup(variant, now) or lookup(key, now), variant, vary

    def explain(
        self, method: str, raw: str, headers: CIMultiDictProxy[str], remote: str | None
    ) -> Explained:
        """What ``__call__`` would decide on this request now (``/explain``), changing
        nothing: the same ``_classify`` and ``_find``, then ``flow.on_lookup``, with
        the in-process entry peeked at (no recency bump, no expiry, no counters)."""
        decision, target = self._classify(method, raw, headers, HttpVersion11, False, remote)
        now = self.clock()
        if not isinstance(decision, Lookup):
            return Explained(decision, target, now)
        if decision.route.mode == "shadow":
            record, learned = self.shadow.peek(decision.key, headers, now)
            key = decision.key if learned is None else variant_of(decision.key, learned, headers)
            if learned is not None:
                decision = decision._replace(learned=learned)
            step = on_lookup(record, decision, headers, now)
            return Explained(decision, target, now, record, key, learned, step, shadow=True)
        entry, key, vary = self._find(decision.key, headers, now, self.tiers.local.peek)
        if vary is not None:
            decision = decision._replace(learned=vary)
        step = on_lookup(entry, decision, headers, now)
        return Explained(decision, target, now, entry, key, vary, step)

    def fast_hit(
        self,
        method: str,
        raw: str,
        headers: CIMultiDictProxy[str],
        raw_headers: RawHeaders,
        body_exists: bool,
        remote: str | None,
        largest: int | None = None,
    ) -> FastHit | None:
        """A plain hit of an HTTP/1.1 ``GET`` or ``HEAD``, as the bytes to write, or None
        for anything else (``__call__`` then handles the request from the start).

        Called by the public port's protocol (``guard.py``) as the request's head
        is parsed, without a request object, a task or a response object: the
        decisions are ``__call__``'s (``_classify``, ``on_lookup``), the head is the
        entry's prepared one (``hitwire``); bodies over ``largest`` are left to
        ``__call__``. Nothing here changes state that
        ``__call__`` would not change the same way on the same request."""
        started = time.perf_counter()
        # The decision is a pure function of these and of the configuration:
        # remembered for requests sent again byte for byte (``_plain_lookup``).
        asked = (method, raw, raw_headers, body_exists, remote)
        decision = self._fast.get(asked)
        if decision is None:
            decision = self._plain_lookup(method, raw, headers, raw_headers, body_exists, remote)
            if len(raw) + sum(len(n) + len(v) for n, v in raw_headers) <= FAST_MEMO_HEAD:
                if len(self._fast) >= FAST_MEMO_SIZE:
                    self._fast.clear()
                self._fast[asked] = decision
        if decision is False:
            return None
        assert isinstance(decision, Lookup)
        now = self.clock()
        entry, _, _ = self._find(decision.key, headers, now)
        if entry is None or now >= entry.fresh_until or entry.status == 204:
            return None  # a 204 says no Content-Length (RFC 9110 8.6): aiohttp's path
        if largest is not None and len(entry.body) > largest and not decision.head:
            return None
        route = decision.route
        head, has_date = wire_head(entry, route)
        date = b"" if has_date else self._date.date(time.time())
        wire = head + hitwire.tail(age(entry, now), int(entry.fresh_until - now), date)
        return FastHit(
            wire, None if decision.head else entry.body, entry.status, route.name, started
        )

    def _plain_lookup(
        self,
        method: str,
        raw: str,
        headers: CIMultiDictProxy[str],
        raw_headers: RawHeaders,
        body_exists: bool,
        remote: str | None,
    ) -> Lookup | Literal[False]:
        """The lookup a request asks for whole, or False if it asks anything else of
        the cache (a conditional, a range) or is no lookup at all."""
        for name in ASKS_MORE:
            if name in headers:
                return False
        if not h.forwardable(raw_headers):
            return False
        decision, _ = self._classify(method, raw, headers, HttpVersion11, body_exists, remote)
        if decision.__class__ is not Lookup or decision.route.mode == "shadow":
            return False  # a shadow route is never answered from the cache
        return decision

    def account_fast_hit(
        self, hit: FastHit, method: str, raw: str, remote: str | None, sent: int
    ) -> None:
        """Account for a hit answered by ``fast_hit`` once its body is out (or the
        client left): as ``_done`` accounts for one answered by ``__call__``."""
        self.stats.record(hit.route, CacheOutcome.HIT)
        elapsed = time.perf_counter() - hit.started
        self.stats.latency["HIT"].observe(elapsed)
        if self._access_on:
            raw_path, _, raw_query = raw.partition("?")
            self.access.write(
                remote,
                method,
                raw_path,
                raw_query,
                hit.status,
                "HIT",
                hit.route,
                sent,
                elapsed,
                None,
            )

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        if not h.forwardable(request.raw_headers):
            return self._done(request, plain(400, "header value is not UTF-8"), started, None)
        decision, target = self._classify(
            request.method,
            request.raw_path,
            request.headers,
            request.version,
            request.body_exists,
            request.remote,
        )
        if decision is None:
            return self._done(request, plain(400, target), started, None)
        if decision.route is None:
            name = None
        else:
            name = decision.route.name
            if self._access_on:
                request[ROUTE_KEY] = name
        response: web.StreamResponse
        match decision:
            case Lookup() if decision.route.mode == "shadow":
                response = await self._cut_accounted(
                    request, self._shadow(request, decision, target), started, name
                )
            case Lookup():
                now = self.clock()
                entry, key, vary = self._find(decision.key, request.headers, now)
                if vary is not None:
                    decision = decision._replace(learned=vary)  # what fills must send
                step = on_lookup(entry, decision, request.headers, now)
                if isinstance(step, Serve):
                    # The hit: answered at once, without another coroutine.
                    hit = self._serve(request, step, decision.route, now)
                    return self._done(request, hit, started, name, "HIT")
                response = await self._cut_accounted(
                    request, self._not_fresh(request, decision, step, key), started, name
                )
            case Bypass(reason=BypassReason.UPGRADE):
                status = h.cache_status(hit=False, fwd="bypass", detail="upgrade")
                tunnel = self.tunnels.open(request, target, status)
                response = await self._cut_accounted(request, tunnel, started, name)
            case Bypass():
                forward = self.passthrough.forward(
                    request,
                    target,
                    x_cache="BYPASS",
                    status=h.cache_status(hit=False, fwd="bypass", detail=decision.reason.value),
                    invalidate=decision.invalidate,
                )
                response = await self._cut_accounted(request, forward, started, name)
            case _:
                assert_never(decision)
        return self._done(request, response, started, name)

    # -- acting on the flow's decisions ------------------------------------------------

    def _shadow(
        self, request: web.BaseRequest, lookup: Lookup, target: str
    ) -> Coroutine[Any, Any, web.StreamResponse]:
        """A shadow route's request: forwarded unchanged, and decided as the cache
        would have decided it (``shadow.py``), without storing or serving anything."""

        def sent(found: Lookup) -> CIMultiDictProxy[str]:
            fill = _fill_headers(request, found, self._trusted)
            return CIMultiDictProxy(CIMultiDict(fill))

        watch = self.shadow.on_request(lookup, request.headers, self.clock(), sent)
        observer = None if watch is None else Follower(self.shadow, watch, self.clock, time.time)
        return self.passthrough.forward(
            request, target, x_cache="BYPASS", status=SHADOW_STATUS, observer=observer
        )

    async def _not_fresh(
        self,
        request: web.BaseRequest,
        lookup: Lookup,
        step: OnLookup,
        key: str,
        cluster: bool | None = None,
    ) -> web.StreamResponse:
        """No fresh entry in-process (``cluster``: how the shared tier answered, None
        if not asked yet)."""
        match step:
            case Serve() | Forward():
                return await self._answer(request, lookup, step)
            case StaleWhileRevalidate(entry, conditions):
                if self.coalescer.get(key) is None:  # else a refresh (or a fill) runs
                    self.filler.start(
                        lookup,
                        key,
                        (*_fill_headers(request, lookup, self._trusted), *conditions),
                        revalidating=entry if conditions else None,
                        background=True,
                    )
                    log.debug("revalidating %s in the background", lookup.path)
                stale = Serve(entry, Served.STALE, "revalidating")
                return self._serve(request, stale, lookup.route, self.clock())
            case Revalidate() | Fetch():
                return await self._miss(request, lookup, step, key, cluster)
            case _:
                assert_never(step)

    async def _answer(
        self, request: web.BaseRequest, lookup: Lookup, step: Serve | Forward
    ) -> web.StreamResponse:
        match step:
            case Serve():
                return self._serve(request, step, lookup.route, self.clock())
            case Forward(fwd, detail):
                return await self.passthrough.forward(
                    request,
                    lookup.target,
                    x_cache="MISS",
                    status=h.cache_status(hit=False, fwd=fwd, detail=detail),
                )
            case _:
                assert_never(step)

    async def _miss(
        self,
        request: web.BaseRequest,
        lookup: Lookup,
        step: Revalidate | Fetch,
        key: str,
        cluster: bool | None,
    ) -> web.StreamResponse:
        """Join the fill in progress for this key, or start one; the shared tier is
        asked first, once."""
        fill = self.coalescer.get(key)
        if fill is None and cluster is None and self.tiers.shared is not None:
            answered, found = await self.tiers.lookup_shared(key, lookup.route.name, lookup.path)
            # A tier that just failed is not asked again for this request: it adds
            # its timeout once, at most.
            again = on_shared(found, step, lookup, request.headers, self.clock())
            if again is not step:
                return await self._not_fresh(request, lookup, again, key, answered)
            cluster = answered
            fill = self.coalescer.get(key)  # one may have started while we asked
        if fill is not None:
            return await self._follow(request, fill, lookup, step.stale)
        fill = self.filler.start(
            lookup,
            key,
            (*_fill_headers(request, lookup, self._trusted), *step.conditions),
            revalidating=step.stale if isinstance(step, Revalidate) else None,
            cluster=cluster is not False,
        )
        if step.lead is Lead.FROM_ENTRY:
            return await self._lead_from_entry(request, fill, lookup, step.stale)
        return await self._lead(request, fill, lookup, step.stale)

    async def _lead(
        self, request: web.BaseRequest, fill: Fill, lookup: Lookup, stale: StoredResponse | None
    ) -> web.StreamResponse:
        """The client whose miss started the fill: stream the body as it arrives."""
        relay = fill.relay
        relay.interim_to(functools.partial(send_interim, request))
        try:
            first = await self._wait(fill.head, request, lookup, stale)
            if isinstance(first, web.StreamResponse):
                return first
            if first.upstream_s is not None:
                request[UPSTREAM_KEY] = first.upstream_s
            step = on_head(first, stale, lookup.route, self.clock())
            match step:
                case Serve():
                    return self._serve(request, step, lookup.route, self.clock())
                case Stream():
                    return await self._stream(request, step, lookup, relay)
                case _:
                    assert_never(step)
        finally:
            relay.abandon()

    async def _lead_from_entry(
        self, request: web.BaseRequest, fill: Fill, lookup: Lookup, stale: StoredResponse | None
    ) -> web.StreamResponse:
        """A miss with ``If-Match`` or ``If-Unmodified-Since`` that started the fill,
        answered from the entry it stores (``flow.Lead.FROM_ENTRY``). A response that
        is not stored is asked for again with the conditions, for the app to decide."""
        fill.relay.abandon()  # nobody streams this fill: it is read to be stored
        result = await self._wait(fill.result, request, lookup, stale)
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Stored) and result.upstream_s is not None:
            request[UPSTREAM_KEY] = result.upstream_s
        return await self._answer(
            request, lookup, lead_result(result, stale, lookup.route, self.clock())
        )

    async def _follow(
        self, request: web.BaseRequest, fill: Fill, lookup: Lookup, stale: StoredResponse | None
    ) -> web.StreamResponse:
        """A client that missed while a fill for its key runs: wait and share it."""
        fill.join()
        self.stats.coalesced()
        result = await self._wait(fill.result, request, lookup, stale)
        if isinstance(result, web.StreamResponse):
            return result
        step = follow_result(result, stale, lookup.route, self.clock(), request.headers)
        return await self._answer(request, lookup, step)

    async def _wait(
        self,
        future: asyncio.Future[_Awaited],
        request: web.BaseRequest,
        lookup: Lookup,
        stale: StoredResponse | None,
    ) -> _Awaited | web.StreamResponse:
        """What a fill hands this client (its first news or its result), or the
        answer when the fill failed (``flow.on_failure``), or ``503`` when it was
        cancelled because sidecache is stopping. Cancelling this client never
        cancels the fill (shielded)."""
        try:
            return await asyncio.shield(future)
        except UpstreamError as exc:
            failure = Failure(exc.status, exc.reason, 1 if isinstance(exc, UpstreamBusy) else None)
            step = on_failure(failure, stale, lookup.route, self.clock())
            match step:
                case Serve():
                    return self._serve(request, step, lookup.route, self.clock())
                case Fail(status, reason, retry_after):
                    return plain(status, reason, x_cache="MISS", retry_after=retry_after)
                case _:
                    assert_never(step)
        except ConnectionAbortedError:
            return plain(503, "shutting down")

    # -- writing answers -----------------------------------------------------------------

    def _serve(
        self, request: web.BaseRequest, serve: Serve, route: RouteConfig, now: float
    ) -> web.Response:
        """The response built from a stored entry (``answer.from_entry``)."""
        if self._debug and serve.served is Served.STALE:
            log.debug("serving stale %s: %s", serve.entry.path, serve.detail)
        status, headers, body = from_entry(serve, route, request.headers, now)
        if body is None:
            return VerbatimResponse(status=status, headers=headers)
        if body.__class__ is memoryview or len(body) > SLICED_ABOVE:
            return sliced_response(status, body, headers)
        return VerbatimResponse(status=status, body=body, headers=headers)

    async def _stream(
        self, request: web.BaseRequest, stream: Stream, lookup: Lookup, relay: Relay
    ) -> web.StreamResponse:
        """The app's answer to this client's fill, streamed as the fill reads it."""
        head = stream.head
        out = VerbatimStreamResponse(status=head.status, reason=head.reason)
        copy_headers(out, streamed_head(stream, lookup.route))
        if head.content_length is not None and head.status not in (204, 304):
            out.content_length = head.content_length
        if not await prepared(request, out):
            return out
        if lookup.head:
            await out.write_eof()
            return out
        return await self._pump(request, out, relay)

    async def _pump(
        self, request: web.BaseRequest, out: web.StreamResponse, relay: Relay
    ) -> web.StreamResponse:
        """Copy a fill's body to the client who started it.

        The fill bounds the app's side; here the client must take each chunk within
        ``server.send_timeout``. A client cut for being slow, here or by the fill
        that waited on it past ``upstream.stream_timeout``, counts in
        ``slow_clients`` (once: either ends the copy)."""
        copy = BodyCopy(cap=None, idle=self.send_timeout)
        try:
            sent = await send_body(
                request, out, _chunks_of(relay), copy, self.stats, request.raw_path
            )
        except UpstreamError:
            sent = False  # the fill failed (it counted that)
        if sent:
            await out.write_eof()
        return out

    # -- accounting ----------------------------------------------------------------------

    async def _cut_accounted(
        self,
        request: web.BaseRequest,
        answer: Coroutine[Any, Any, web.StreamResponse],
        started: float,
        route: str | None,
    ) -> web.StreamResponse:
        """Await ``answer``; if it is cancelled (a stop cutting streams after the
        grace period) once its head is out, account for what it sent first."""
        try:
            return await answer
        except asyncio.CancelledError:
            out = request.get(STREAM_KEY)
            if out is not None:
                self._done(request, out, started, route)
            raise

    def _done(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        started: float,
        route: str | None,
        x_cache: str | None = None,
    ) -> web.StreamResponse:
        """Account for a response, once: the counters by its ``X-Cache`` (our own
        answers before any lookup say none), the latency, the access log."""
        if x_cache is None:
            x_cache = response.headers.get("X-Cache")
        histogram: Histogram | None = None
        if x_cache is not None:
            self.stats.record(route, _OUTCOMES[x_cache])
            histogram = self.stats.latency[x_cache]
        # Sliced bodies are only ever in a VerbatimResponse; ``isinstance`` on an
        # aiohttp response goes through ABCMeta (it is a MutableMapping): slow.
        if (
            response.__class__ is VerbatimResponse
            and response.body.__class__ is SlicedPayload
            and request.method != "HEAD"
        ):
            self._account_when_sent(request, response, started, histogram)
            return response
        # ``_account``, inlined: this runs once per hit.
        elapsed = time.perf_counter() - started
        if histogram is not None:
            histogram.observe(elapsed)
        if self._access_on:
            self.access.record(request, response, elapsed)
        return response

    def _account(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        started: float,
        histogram: Histogram | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        if histogram is not None:
            histogram.observe(elapsed)
        if self._access_on:
            self.access.record(request, response, elapsed)

    def _account_when_sent(
        self,
        request: web.BaseRequest,
        response: web.Response,
        started: float,
        histogram: Histogram | None,
    ) -> None:
        """A large stored body is written by aiohttp after the handler returns: its
        latency and access log line wait for the last slice (or the client leaving)."""

        def sent(nbytes: int) -> None:
            request[SENT_KEY] = nbytes
            self._account(request, response, started, histogram)

        body = response.body
        assert isinstance(body, SlicedPayload)
        body.on_sent = sent


async def _chunks_of(relay: Relay) -> AsyncIterator[bytes | memoryview]:
    while (chunk := await relay.next_chunk()) is not None:
        yield chunk


def _fill_headers(
    request: web.BaseRequest, lookup: Lookup, trusted: tuple[IPNetwork, ...]
) -> Headers:
    """What a fill sends upstream: no conditionals, no ``Range``, only keyed inputs."""
    return upstream_headers(
        request, fill=True, trusted=trusted, keyed=(*lookup.route.vary, *lookup.learned)
    )
