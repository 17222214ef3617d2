"""The public-port handler: route -> policy -> store / coalesce / upstream.

Owns the per-request drive loop. Decisions come from the pure core
(``policy.decide``, ``policy.store_refusal``, ``policy.freshness``); this module
only dispatches on them and moves bytes. Responses served from the cache are
built from the stored entry; everything else is streamed from the upstream as
it is read, never buffered whole (except a body being stored, which is bounded
by ``cache.max_object_bytes``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, assert_never

from aiohttp import StreamReader, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy import headers as h
from proxy.accesslog import ROUTE_KEY, SENT_KEY, STREAM_KEY, UPSTREAM_KEY, AccessLog
from proxy.admission import Admission
from proxy.body import (
    SLICED_ABOVE,
    SlicedPayload,
    VerbatimResponse,
    VerbatimStreamResponse,
    send_interim,
    sliced_response,
)
from proxy.coalesce import Coalescer, Fill, Head, Pass, Relay, Stored
from proxy.entry import Headers, StoredResponse
from proxy.keys import (
    host_allowed,
    loose_path,
    normalise_host,
    normalise_path,
    request_host,
    resolutions,
    split_absolute,
)
from proxy.pacing import BodyCopy, SlowClient
from proxy.policy import (
    Bypass,
    BypassReason,
    Freshness,
    Lookup,
    NoStore,
    age,
    build_entry,
    decide,
    freshness,
    store_refusal,
    usable_on_error,
    variant_of,
    vary_on_coding,
)
from proxy.ranges import (
    Partial,
    Unsatisfiable,
    answer_range,
    not_modified,
    precondition_failed,
)
from proxy.routes import RouteTable
from proxy.shared import SharedTier
from proxy.stats import CacheOutcome, Histogram, Stats
from proxy.store import MemoryLRUCache
from proxy.upstream import ClientBody, Upstream, UpstreamBusy, UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from proxy.config import Config, RouteConfig

log = logging.getLogger(__name__)

# What a client waits for on a fill: its head, or its result.
_Awaited = TypeVar("_Awaited", Head, Stored | Pass)

# Unread bytes a pass-through relay may hold before the upstream read waits for
# the client: bounds memory per streaming response.
STREAM_WINDOW = 1024 * 1024
# RFC 9110 section 15.4.5: the headers a 304 carries from the stored response.
_NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
_NO_BODY_STATUSES = frozenset({204, 304})
# Distinct raw paths whose normalisation and route are remembered; the memo is
# dropped whole when full, so a scan of random paths costs a rebuild, not memory.
TARGET_MEMO_SIZE = 8192
# How often a replica waiting for another's fill looks for the stored entry.
CLUSTER_POLL = 0.05


class Proxy:
    """The request handler of the public port (an aiohttp low-level handler)."""

    def __init__(
        self,
        config: Config,
        *,
        store: MemoryLRUCache,
        upstream: Upstream,
        admission: Admission,
        shared: SharedTier | None = None,
        stats: Stats,
        coalescer: Coalescer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.admission = admission
        self.shared = shared
        self.stats = stats
        self.coalescer = coalescer
        self.clock = clock
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Switch to a new configuration; the cache and the counters stay."""
        self.config = config
        self.access = AccessLog(config.log.access, config.log.sensitive_query)
        self._access_on = self.access.enabled
        # Read once per (re)configuration: a hit should not ask the logging tree.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._hit_latency = self.stats.latency["HIT"]
        self.routes: RouteTable[RouteConfig] = RouteTable(config.routes)
        self.max_object_bytes = config.cache.max_object_bytes
        # Bodies of unknown length being filled keep at most the cache's budget.
        self.coalescer.allowance.limit = config.cache.max_bytes
        # raw path -> (normalised path, route). Both are pure functions of the raw
        # path and the route table, and together they cost about a fifth of a hit.
        self._targets: dict[str, tuple[str | None, RouteConfig | None]] = {}
        self._allowed_hosts = config.server.allowed_hosts
        # raw Host -> normalised host, or "" when malformed or not allowed.
        self._hosts: dict[str, str] = {}

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

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        if not h.forwardable(request.raw_headers):
            return self._done(request, _plain(400, "header value is not UTF-8"), started)
        raw = request.raw_path
        host_header = request.headers.get("Host")
        host: str | None
        if raw.startswith("/"):
            raw_path, _, raw_query = raw.partition("?")
            target = raw
            if host_header is not None:
                host = self._host(host_header)
            else:
                # RFC 9112 section 3.2: an HTTP/1.1 request without Host is refused.
                host = "" if request.version < (1, 1) and not self._allowed_hosts else None
        else:
            # Absolute-form (RFC 9112 section 3.2.2): its authority replaces Host, and
            # it is keyed and forwarded like the same path sent with that Host.
            parts = split_absolute(raw)
            if parts is None:
                return self._done(request, _plain(400, "request target must be a path"), started)
            target = parts[2]
            raw_path, _, raw_query = target.partition("?")
            host = request_host(raw, host_header)
            if host is not None and not host_allowed(host, self._allowed_hosts):
                host = None
        if host is None:
            return self._done(request, _plain(400, "unknown or malformed host"), started)
        path, route = self._resolve(raw_path)
        decision = decide(
            route,
            request.method,
            path,
            raw_query,
            request.headers,
            host=host,
            has_body=request.body_exists,
            raw_path=raw_path,
        )
        if self._debug:
            log.debug("%s %s -> %s", request.method, raw_path if route else "-", decision)
        if self._access_on and decision.route is not None:
            request[ROUTE_KEY] = decision.route.name
        response: web.StreamResponse
        match decision:
            case Lookup():
                # The hit path, inline and without an extra coroutine: it is the
                # one that must be fast (measured with bench/run.py).
                key = decision.key
                vary = self.store.vary_spec(key)
                now = self.clock()
                if vary is None:
                    entry = self.store.lookup(key, now)
                else:
                    key = variant_of(key, vary, request.headers)
                    # An answer stored without Vary (under the base key) suits every
                    # client, e.g. the identity one beside an implicit gzip variant.
                    entry = self.store.lookup(key, now) or self.store.lookup(decision.key, now)
                if entry is not None and now < entry.fresh_until:
                    self.stats.record(decision.route.name, CacheOutcome.HIT)
                    hit = self._serve(request, entry, decision.route, "HIT", now)
                    if hit.body.__class__ is SlicedPayload and request.method != "HEAD":
                        # Written after we return: timed and counted once sent.
                        self._account_when_sent(request, hit, started, self._hit_latency)
                        return hit
                    elapsed = time.perf_counter() - started
                    self._hit_latency.observe(elapsed)
                    if self._access_on:
                        self.access.record(request, hit, elapsed)
                    return hit
                if vary is not None:
                    decision = decision._replace(learned=vary)  # what fills must send
                if (
                    entry is not None
                    and freshness(entry, decision.route, now) is Freshness.STALE_WHILE_REVALIDATE
                ):
                    self._revalidate(request, decision, key)
                    response = self._serve_stale(request, entry, decision.route, "revalidating")
                else:
                    response = await self._cut_accounted(
                        request, self._miss(request, decision, entry, key), started
                    )
            case Bypass():
                self.stats.record(
                    decision.route.name if decision.route else None, CacheOutcome.BYPASS
                )
                forward = self._forward(
                    request,
                    target,
                    x_cache="BYPASS",
                    status=h.cache_status(hit=False, fwd="bypass", detail=decision.reason.value),
                    invalidate=decision.invalidate,
                    fill=False,
                )
                response = await self._cut_accounted(request, forward, started)
            case _:
                assert_never(decision)
        return self._done(request, response, started)

    async def _cut_accounted(
        self,
        request: web.BaseRequest,
        answer: Coroutine[Any, Any, web.StreamResponse],
        started: float,
    ) -> web.StreamResponse:
        """Await ``answer``; if it is cancelled (a stop cutting streams after the
        grace period) once its head is out, account for what it sent first."""
        try:
            return await answer
        except asyncio.CancelledError:
            out = request.get(STREAM_KEY)
            if out is not None:
                self._account(
                    request, out, started, self.stats.latency.get(out.headers.get("X-Cache", ""))
                )
            raise

    def _done(
        self, request: web.BaseRequest, response: web.StreamResponse, started: float
    ) -> web.StreamResponse:
        """Account for a response: latency by X-Cache value, and the access log."""
        histogram = self.stats.latency.get(response.headers.get("X-Cache", ""))
        if (
            isinstance(response, web.Response)
            and response.body.__class__ is SlicedPayload
            and request.method != "HEAD"
        ):
            self._account_when_sent(request, response, started, histogram)
            return response
        self._account(request, response, started, histogram)
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

    # -- cache lookups -------------------------------------------------------------

    async def _miss(
        self, request: web.BaseRequest, lookup: Lookup, stale: StoredResponse | None, key: str
    ) -> web.StreamResponse:
        """No fresh entry: join the fill in progress for this key, or start one.

        ``stale`` is the expired entry, if any, kept to stand in on upstream errors.
        """
        if lookup.partial:
            self.stats.record(lookup.route.name, CacheOutcome.MISS)
            return await self._forward(
                request,
                lookup.target,
                x_cache="MISS",
                status=h.cache_status(hit=False, fwd="uri-miss", detail="range"),
                invalidate=None,
                fill=False,
            )
        fill = self.coalescer.get(key)
        cluster = self.shared is not None
        if fill is None and self.shared is not None:
            # Second tier: another replica may have it.
            answered, found = await self.shared.lookup(key)
            # A tier that just failed is not asked again for this request: it adds
            # its timeout once, at most.
            cluster = answered
            adopted = self._adopt(found, key)
            if adopted is not None:
                self.stats.record(lookup.route.name, CacheOutcome.HIT)
                return self._serve(
                    request, adopted, lookup.route, "HIT", self.clock(), detail="shared"
                )
            if stale is None and found is not None and found.key == key:
                stale = found
            fill = self.coalescer.get(key)  # one may have started while we asked
        if fill is None:
            fill = self.coalescer.start(
                key,
                STREAM_WINDOW,
                lambda f: self._run_fill(f, lookup, _fill_headers(request, lookup), cluster),
                route=lookup.route.name,
                path=lookup.path,
            )
            if "If-Match" in request.headers or "If-Unmodified-Since" in request.headers:
                return await self._lead_conditional(request, fill, lookup, stale)
            return await self._lead(request, fill, lookup, stale)
        return await self._follow(request, fill, lookup, stale)

    async def _cluster_turn(self, key: str) -> tuple[str | None, StoredResponse | None]:
        """Cluster-wide single flight: (our lock token, None), or (None, the entry
        another replica stored while we waited), or (None, None) to fetch unlocked
        (the tier is away, or the holder neither finished nor released in time)."""
        shared = self.shared
        assert shared is not None
        token = uuid.uuid4().hex
        taken = await shared.lock(key, token)
        if taken is None:
            return None, None
        if taken:
            return token, None
        deadline = time.monotonic() + shared.lock_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(CLUSTER_POLL)
            found = self._adopt(await shared.get(key), key)
            if found is not None:
                return None, found
            held = await shared.locked(key)
            if held is None:
                return None, None
            if not held:  # the holder is gone without storing: our turn
                taken = await shared.lock(key, token)
                if taken is None:
                    return None, None
                if taken:
                    return token, None
        return None, None

    def _adopt(self, found: StoredResponse | None, key: str) -> StoredResponse | None:
        """A fresh copy of ``key`` from the shared tier, now also kept in-process;
        None if there is none, or it is another key's or no longer fresh."""
        now = self.clock()
        if found is None or found.key != key or now >= found.fresh_until:
            return None
        self.store.store(found, now)
        self.stats.shared_hits += 1
        return found

    def _revalidate(self, request: web.BaseRequest, lookup: Lookup, key: str) -> None:
        """``stale_while_revalidate``: one background fill refreshes the entry."""
        if self.coalescer.get(key) is not None:
            return  # a refresh (or a fill) is already on its way
        fill = self.coalescer.start(
            key,
            STREAM_WINDOW,
            lambda f: self._run_fill(f, lookup, _fill_headers(request, lookup)),
            route=lookup.route.name,
            path=lookup.path,
        )
        fill.relay.abandon()  # nobody streams it: it is read only to be stored
        log.debug("revalidating %s in the background", lookup.path)

    async def _run_fill(
        self, fill: Fill, lookup: Lookup, headers: Headers, cluster: bool = True
    ) -> None:
        """Fetch ``lookup`` once, hand the body to the leader, store it if allowed.

        ``cluster``: take the cluster-wide turn first (False when the shared tier
        just failed for this request)."""
        token: str | None = None
        if self.shared is not None and cluster:
            token, found = await self._cluster_turn(fill.key)
            if found is not None:
                fill.shared_entry = found
                fill.set_head(Head(found.status, None, found.headers, len(found.body), True))
                fill.resolve(Stored(found))
                fill.relay.finish()
                return
        try:
            async with self.admission.slot():
                self.stats.upstream_started()
                await self._fetch_fill(fill, lookup, headers, write_shared=cluster)
        except UpstreamBusy as exc:
            log.warning("upstream busy, fill for %s refused: %s", lookup.path, exc)
            fill.fail(exc)
        except UpstreamError as exc:
            self.stats.upstream_failed()
            log.info("upstream %s for %s: %s", exc.reason, lookup.path, exc)
            fill.fail(exc)
        except SlowClient as exc:
            # The fill waited on its first client when its time ran out; that
            # client's relay counts it and cuts it (``_pump``).
            if fill.relay.keeping:
                # Held back for that client alone, to bound memory (``Relay``):
                # whoever joined since fetches for itself.
                self._give_up_storing(fill, NoStore.MEMORY)
            fill.fail(exc)
        finally:
            if token is not None and self.shared is not None:
                await self.shared.unlock(fill.key, token)

    async def _fetch_fill(
        self, fill: Fill, lookup: Lookup, headers: Headers, *, write_shared: bool = True
    ) -> None:
        relay = fill.relay
        epoch = self.store.purge_epoch(lookup.route.name, lookup.path)
        started = time.perf_counter()
        async with self.upstream.request(
            "GET", lookup.target, headers, relayed=True, interim=relay.interim
        ) as resp:
            # After the head, the body is bounded as a pass-through one is (``_relay``),
            # but by its first client only while the fill waits on it (``Relay``).
            copy = BodyCopy(
                cap=asyncio.get_running_loop().time() + self.config.upstream.stream_timeout,
                idle=None,
            )
            fill.upstream_s = time.perf_counter() - started
            self.stats.upstream_latency.observe(fill.upstream_s)
            kept = h.response_headers_for_client(resp.headers)
            refusal = store_refusal(
                lookup.route,
                resp.status,
                kept,
                content_length=resp.content_length,
                max_object_bytes=self.max_object_bytes,
                authorized=lookup.authorized,
            )
            fill.set_head(
                Head(resp.status, resp.reason, kept, resp.content_length, refusal is None)
            )
            if refusal is not None:
                self._give_up_storing(fill, refusal)
            else:
                relay.expect(resp.content_length)

            async def keep(chunk: bytes) -> bool:
                if relay.consumer_gone and not relay.keeping:
                    return False
                if relay.keeping:
                    # Decided before the chunk is kept: never past either bound.
                    if relay.size + len(chunk) > self.max_object_bytes:
                        self._give_up_storing(fill, NoStore.TOO_LARGE)
                    elif not relay.fits(len(chunk)):
                        self._give_up_storing(fill, NoStore.MEMORY)
                await relay.put(chunk)
                return True

            if not await copy.run(resp.chunks(), keep):
                resp.abort()  # nobody reads and nothing will be stored
                relay.finish()
                return
            stored: StoredResponse | None = None
            if relay.keeping:
                now = self.clock()
                entry = build_entry(
                    lookup,
                    resp.status,
                    kept,
                    relay.body(),
                    now=now,
                    request_headers=CIMultiDictProxy(CIMultiDict(headers)),
                )
                if self.store.store(entry, now, since=epoch):
                    stored = entry
                log.debug(
                    "fill %r complete: %d bytes, stored=%s", lookup.key, relay.size, bool(stored)
                )
                fill.resolve(Stored(entry))
            relay.finish()
            if stored is not None and write_shared and self.shared is not None:
                await self.shared.put(stored)  # write-through, once the leader has it all

    def _give_up_storing(self, fill: Fill, reason: NoStore) -> None:
        log.debug("fill %r not stored: %s", fill.key, reason.value)
        fill.relay.stop_keeping()
        self.coalescer.forget(fill)
        fill.resolve(Pass(reason))

    async def _lead(
        self,
        request: web.BaseRequest,
        fill: Fill,
        lookup: Lookup,
        stale: StoredResponse | None,
    ) -> web.StreamResponse:
        """The client whose miss started the fill: stream the body as it arrives."""
        route = lookup.route
        relay = fill.relay
        relay.interim_to(functools.partial(send_interim, request))
        try:
            head = await self._wait_for(fill.head, request, lookup, stale)
            if isinstance(head, web.StreamResponse):
                return head
            if head.status >= 500 and self._stale_usable(stale, route):
                # The app answered with an error: the stored copy stands in for it.
                assert stale is not None
                return self._serve_stale(request, stale, route, f"upstream-{head.status}")
            if fill.shared_entry is not None:
                self.stats.record(route.name, CacheOutcome.HIT)
                return self._serve(
                    request, fill.shared_entry, route, "HIT", self.clock(), detail="shared"
                )
            self.stats.record(route.name, CacheOutcome.MISS)
            if fill.upstream_s is not None:
                request[UPSTREAM_KEY] = fill.upstream_s
            out = VerbatimStreamResponse(status=head.status, reason=head.reason)
            # Keyed on Accept-Encoding if encoded: said so to caches in front, too.
            _copy_headers(out, vary_on_coding(head.headers))
            if head.storable and route.client_cache_control is not None:
                out.headers["Cache-Control"] = route.client_cache_control
            out.headers["X-Cache"] = "MISS"
            # No "stored" (RFC 9211: the response was stored): the head goes out
            # before the body is read, and the body may yet turn out too large, be
            # cut short or be purged. Whether it was stored, the next request shows.
            out.headers["Cache-Status"] = h.cache_status(
                hit=False,
                fwd="stale" if stale is not None else "uri-miss",
                fwd_status=head.status,
            )
            if head.content_length is not None and head.status not in _NO_BODY_STATUSES:
                out.content_length = head.content_length
            if not await _prepared(request, out):
                return out
            if lookup.head:
                await out.write_eof()
                return out
            return await self._pump(request, out, relay)
        finally:
            relay.abandon()

    async def _lead_conditional(
        self,
        request: web.BaseRequest,
        fill: Fill,
        lookup: Lookup,
        stale: StoredResponse | None,
    ) -> web.StreamResponse:
        """A miss with ``If-Match`` or ``If-Unmodified-Since`` that started the fill.

        The fill drops them, so that its entry serves everybody; this client is
        answered from that entry once stored, the preconditions evaluated against
        it (RFC 9110 section 13.2.2: ``412``, or the entry). A response that is not
        stored is asked for again with the conditions, for the app to decide.
        """
        fill.relay.abandon()  # nobody streams this fill: it is read to be stored
        result = await self._wait_for(fill.result, request, lookup, stale)
        if isinstance(result, web.StreamResponse):
            return result
        route = lookup.route
        if fill.upstream_s is not None:
            request[UPSTREAM_KEY] = fill.upstream_s
        if isinstance(result, Stored):
            self.stats.record(route.name, CacheOutcome.MISS)
            return self._serve(request, result.entry, route, "MISS", self.clock())
        return await self._not_shared(request, fill, lookup, stale, result.reason)

    async def _follow(
        self,
        request: web.BaseRequest,
        fill: Fill,
        lookup: Lookup,
        stale: StoredResponse | None,
    ) -> web.StreamResponse:
        """A client that missed while a fill for its key runs: wait and share it."""
        route = lookup.route
        fill.join()
        self.stats.coalesced()
        result = await self._wait_for(fill.result, request, lookup, stale)
        if isinstance(result, web.StreamResponse):
            return result
        match result:
            case Stored(entry) if (
                entry.vary and variant_of(entry.base_key, entry.vary, request.headers) != entry.key
            ):
                # The first fill of a key taught us it varies, on headers where
                # this client differs from the one who asked: not its answer.
                self.stats.record(route.name, CacheOutcome.MISS)
                return await self._forward(
                    request,
                    lookup.target,
                    x_cache="MISS",
                    status=h.cache_status(hit=False, fwd="vary-miss"),
                    invalidate=None,
                    fill=False,
                )
            case Stored(entry):
                self.stats.record(route.name, CacheOutcome.HIT)
                return self._serve(request, entry, route, "HIT", self.clock(), detail="coalesced")
            case Pass(reason):
                return await self._not_shared(request, fill, lookup, stale, reason)
            case _:
                assert_never(result)

    async def _wait_for(
        self,
        future: asyncio.Future[_Awaited],
        request: web.BaseRequest,
        lookup: Lookup,
        stale: StoredResponse | None,
    ) -> _Awaited | web.StreamResponse:
        """What a fill hands this client (its head or its result), or the answer
        when the fill failed: the stale copy or the error, or ``503`` when it was
        cancelled because sidecache is stopping. Cancelling this client never
        cancels the fill (shielded)."""
        try:
            return await asyncio.shield(future)
        except UpstreamError as exc:
            return self._on_error(request, exc, lookup, stale, "MISS")
        except ConnectionAbortedError:
            return _plain(503, "shutting down")

    async def _not_shared(
        self,
        request: web.BaseRequest,
        fill: Fill,
        lookup: Lookup,
        stale: StoredResponse | None,
        reason: NoStore,
    ) -> web.StreamResponse:
        """A fill whose answer is not shareable: the stale copy stands in for a 5xx,
        otherwise this client fetches for itself (hit-for-pass)."""
        route = lookup.route
        status = fill.head.result().status
        if status >= 500 and self._stale_usable(stale, route):
            assert stale is not None
            return self._serve_stale(request, stale, route, f"upstream-{status}")
        self.stats.record(route.name, CacheOutcome.MISS)
        return await self._forward(
            request,
            lookup.target,
            x_cache="MISS",
            status=h.cache_status(hit=False, fwd="uri-miss", detail=reason.value),
            invalidate=None,
            fill=False,
        )

    def _on_error(
        self,
        request: web.BaseRequest,
        exc: UpstreamError,
        lookup: Lookup,
        stale: StoredResponse | None,
        x_cache: str,
    ) -> web.StreamResponse:
        if self._stale_usable(stale, lookup.route):
            assert stale is not None
            return self._serve_stale(request, stale, lookup.route, exc.reason.replace(" ", "-"))
        self.stats.record(lookup.route.name, CacheOutcome.MISS)
        # A miss refused for want of an upstream slot says when to come back, as
        # pass-through requests do.
        retry_after = 1 if isinstance(exc, UpstreamBusy) else None
        return _plain(exc.status, exc.reason, x_cache=x_cache, retry_after=retry_after)

    async def _invalidate(
        self, request: web.BaseRequest, invalidate: frozenset[str], headers: Headers
    ) -> None:
        """RFC 9111 section 4.4: an unsafe request answered without error drops the
        entries of the paths it may have changed (``policy.decide``), and of the
        ``Location`` / ``Content-Location`` it names on the same host, each with every
        path of the same loose form (``store.purge_path``)."""
        paths = set(invalidate)
        hosts = {
            request_host(request.raw_path, request.headers.get("Host")),
            normalise_host(self.upstream.host_header),
        }
        for name in ("location", "content-location"):
            for value in h.get_all(headers, name):
                url = URL(value.strip(), encoded=True)
                if url.is_absolute() and normalise_host(url.raw_authority, url.scheme) not in hosts:
                    continue  # another origin: not ours to drop
                target = request.url.join(url) if not url.is_absolute() else url
                paths.update(resolutions(target.raw_path))
        # A path purge drops every path of its loose form: one purge per form.
        paths = set({loose_path(p): p for p in sorted(paths)}.values())
        purged = sum(self.store.purge_path(p) for p in paths)
        if self.shared is not None:
            for p in paths:
                await self.shared.purge("path", p)
        log.debug("%s: dropped %d entries (%s)", request.method, purged, sorted(paths))

    def _stale_usable(self, stale: StoredResponse | None, route: RouteConfig) -> bool:
        return stale is not None and usable_on_error(stale, route, self.clock())

    def _serve_stale(
        self, request: web.BaseRequest, stale: StoredResponse, route: RouteConfig, why: str
    ) -> web.Response:
        """A stale copy: the app failed (``stale_if_error``), or a refresh is on its
        way (``stale_while_revalidate``)."""
        log.debug("serving stale %s: %s", stale.path, why)
        self.stats.record(route.name, CacheOutcome.STALE)
        return self._serve(request, stale, route, "STALE", self.clock(), detail=why)

    def _serve(
        self,
        request: web.BaseRequest,
        entry: StoredResponse,
        route: RouteConfig,
        x_cache: str,
        now: float,
        detail: str | None = None,
    ) -> web.Response:
        """A response built from a stored entry (HIT or STALE, or the MISS that
        stored it)."""
        # entry.headers already carry ETag and Via (policy.build_entry); only what
        # changes with time is added. A plain list: aiohttp builds the multidict once.
        if route.client_cache_control is None:
            headers = list(entry.headers)
        else:
            headers = [(n, v) for n, v in entry.headers if n.lower() != "cache-control"]
            headers.append(("Cache-Control", route.client_cache_control))
        if x_cache == "HIT" and detail is None:
            # The plain hit, formatted directly (same text as headers.cache_status).
            status = f"sidecache; hit; ttl={int(entry.fresh_until - now)}"
        elif x_cache == "MISS":
            status = h.cache_status(
                hit=False, fwd="uri-miss", fwd_status=entry.status, stored=True, detail=detail
            )
        else:
            status = h.cache_status(
                hit=True,
                fwd="stale" if x_cache == "STALE" else None,
                ttl=entry.fresh_until - now,
                detail=detail,
            )
        headers += (
            ("Age", str(age(entry, now))),
            ("X-Cache", x_cache),
            ("Cache-Status", status),
        )
        rh = request.headers
        im, ius = rh.get("If-Match"), rh.get("If-Unmodified-Since")
        inm, ims = rh.get("If-None-Match"), rh.get("If-Modified-Since")
        if im is not None or ius is not None or inm is not None or ims is not None:
            # RFC 9110 section 13.2.2: If-Match / If-Unmodified-Since first.
            last_modified = h.get(entry.headers, "last-modified")
            if (im is not None or ius is not None) and precondition_failed(
                if_match=im, if_unmodified_since=ius, etag=entry.etag, last_modified=last_modified
            ):
                return VerbatimResponse(status=412, headers=_validators_only(headers))
            if (inm is not None or ims is not None) and not_modified(
                if_none_match=inm,
                if_modified_since=ims,
                etag=entry.etag,
                last_modified=last_modified,
            ):
                return VerbatimResponse(status=304, headers=_validators_only(headers))
        body = entry.body
        range_header = rh.get("Range")
        if range_header is not None and entry.status == 200:
            match answer_range(
                range_header, len(body), if_range=rh.get("If-Range"), etag=entry.etag
            ):
                case Partial(start, end):
                    headers.append(("Content-Range", f"bytes {start}-{end}/{len(body)}"))
                    part = memoryview(body)[start : end + 1]
                    return sliced_response(206, part, headers)
                case Unsatisfiable():
                    headers.append(("Content-Range", f"bytes */{len(body)}"))
                    return VerbatimResponse(status=416, headers=headers)
                case None:
                    pass
        if len(body) > SLICED_ABOVE:
            return sliced_response(entry.status, body, headers)
        return VerbatimResponse(status=entry.status, body=body, headers=headers)

    # -- pass-through ----------------------------------------------------------------

    async def _forward(
        self,
        request: web.BaseRequest,
        target: str,
        *,
        x_cache: str,
        status: str,
        invalidate: frozenset[str] | None,
        fill: bool,
    ) -> web.StreamResponse:
        """Proxy the request unchanged, streaming both bodies; store nothing."""
        headers = _upstream_headers(request, fill=fill)
        body: object = None
        limit = self.config.server.max_body_bytes
        if request.body_exists:
            length = request.content_length
            if length is not None and length > limit:
                return _too_large(limit)  # refused before a byte of it is read
            if length is not None:
                headers = (*headers, ("Content-Length", str(length)))
                body = ClientBody(request.content, length)  # small: kept to be sent again
            else:
                body = _Limited(request.content, limit)
            if request.headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with self.admission.slot():
                self.stats.upstream_started()
                return await self._exchange(
                    request, target, headers, body, x_cache, status, invalidate
                )
        except BodyTooLarge:
            return _too_large(limit)
        except UpstreamBusy as exc:
            log.warning("upstream busy, %s %s refused: %s", request.method, _no_query(target), exc)
            return _plain(exc.status, exc.reason, x_cache=x_cache, retry_after=1)
        except UpstreamError as exc:
            if isinstance(body, _Limited) and body.exceeded:
                return _too_large(limit)
            self.stats.upstream_failed()
            log.info(
                "upstream %s for %s %s: %s", exc.reason, request.method, _no_query(target), exc
            )
            return _plain(exc.status, exc.reason, x_cache=x_cache)

    async def _exchange(
        self,
        request: web.BaseRequest,
        target: str,
        headers: Headers,
        body: object,
        x_cache: str,
        status: str,
        invalidate: frozenset[str] | None,
    ) -> web.StreamResponse:
        """One pass-through request/response, both bodies streamed."""
        started = time.perf_counter()
        async with self.upstream.request(
            request.method,
            target,
            headers,
            body,
            relayed=True,
            interim=functools.partial(send_interim, request),
        ) as resp:
            request[UPSTREAM_KEY] = upstream_s = time.perf_counter() - started
            self.stats.upstream_latency.observe(upstream_s)
            # RFC 9111 section 4.4: any non-error status, 3xx included (a 303 after
            # a POST says the state changed).
            if invalidate is not None and resp.status < 400:
                await self._invalidate(request, invalidate, resp.headers)
            out = VerbatimStreamResponse(status=resp.status, reason=resp.reason)
            _copy_headers(out, h.response_headers_for_client(resp.headers))
            out.headers["X-Cache"] = x_cache
            out.headers["Cache-Status"] = status
            if resp.content_length is not None and resp.status not in _NO_BODY_STATUSES:
                out.content_length = resp.content_length
            if not await _prepared(request, out):
                resp.abort()  # the client left before the head went out
                return out
            if request.method == "HEAD" or resp.status in _NO_BODY_STATUSES:
                await out.write_eof()
                return out
            if await self._relay(request, out, resp, target):
                await out.write_eof()
            return out

    async def _relay(
        self, request: web.BaseRequest, out: web.StreamResponse, resp: UpstreamResponse, target: str
    ) -> bool:
        """Copy a pass-through body to the client as it is read; False if it was cut.

        The app's silence is bounded by ``upstream.read_timeout`` (an app error). The
        client must take data within ``server.send_timeout`` of it being ready, and
        the whole body must be through ``upstream.stream_timeout`` after the head,
        which bounds how long the upstream slot is held. When either runs out, the
        side we were waiting on is to blame: a write counts in ``slow_clients``, a
        read as an upstream error."""
        copy = BodyCopy(
            cap=asyncio.get_running_loop().time() + self.config.upstream.stream_timeout,
            idle=self.config.server.send_timeout,
        )
        try:
            await copy.run(resp.chunks(), out.write)
        except UpstreamError as exc:
            self.stats.upstream_failed()
            log.info("upstream body cut short for %s: %s", _no_query(target), exc)
        except SlowClient as exc:
            self.stats.slow_clients += 1
            log.info("client too slow for %s: cut at %s", _no_query(target), exc.limit)
        except ConnectionError:
            pass  # the client left
        else:
            return True
        finally:
            request[SENT_KEY] = copy.sent
        resp.abort()  # stop reading: the body will not be relayed to its end
        _abort(request)  # a short body must not pass for a complete one
        return False

    async def _pump(
        self, request: web.BaseRequest, out: web.StreamResponse, relay: Relay
    ) -> web.StreamResponse:
        """Copy a fill's body to the client who started it, as ``_relay`` does.

        The fill bounds the app's side; here the client must take each chunk within
        ``server.send_timeout``. A client cut for being slow, here or by the fill
        that waited on it past ``upstream.stream_timeout``, counts in
        ``slow_clients`` (once: either ends the copy)."""
        copy = BodyCopy(cap=None, idle=self.config.server.send_timeout)
        try:
            await copy.run(_chunks_of(relay), out.write)
        except SlowClient as exc:
            self.stats.slow_clients += 1
            log.info("client too slow for %s: cut at %s", _no_query(request.raw_path), exc.limit)
        except (UpstreamError, ConnectionError):
            pass  # the fill failed (it counted that), or the client left
        else:
            await out.write_eof()
            return out
        finally:
            request[SENT_KEY] = copy.sent
        _abort(request)  # a short body must not pass for a complete one
        return out


def _no_query(target: str) -> str:
    """A target for the log: query values may be secrets (the access log redacts
    them by name; other log lines leave the query out)."""
    return target.partition("?")[0]


async def _prepared(request: web.BaseRequest, out: web.StreamResponse) -> bool:
    """Send the head of a streamed response; False if the client has already left."""
    try:
        await out.prepare(request)
    except ConnectionError:
        request[SENT_KEY] = 0
        return False
    request[STREAM_KEY] = out
    return True


async def _chunks_of(relay: Relay) -> AsyncIterator[bytes | memoryview]:
    while (chunk := await relay.next_chunk()) is not None:
        yield chunk


def _upstream_headers(
    request: web.BaseRequest, *, fill: bool, keyed: tuple[str, ...] = ()
) -> Headers:
    return h.request_headers_for_upstream(
        request.headers.items(),
        client_ip=request.remote or "",
        scheme=request.scheme,
        host=request_host(request.raw_path, request.headers.get("Host")) or "",
        fill=fill,
        keyed=keyed,
    )


def _fill_headers(request: web.BaseRequest, lookup: Lookup) -> Headers:
    return _upstream_headers(request, fill=True, keyed=(*lookup.route.vary, *lookup.learned))


def _validators_only(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a 304 (RFC 9110 section 15.4.5) or 412 answered from an entry,
    with the app's own ``Server`` if it sent one."""
    return [
        (n, v)
        for n, v in headers
        if n.lower() in _NOT_MODIFIED_HEADERS
        or n in ("Age", "Via", "X-Cache", "Cache-Status")
        or n.lower() == "server"
    ]


def _copy_headers(out: web.StreamResponse, headers: Headers) -> None:
    """The upstream's end-to-end headers on ``out``, with this proxy added to ``Via``."""
    target = out.headers
    for name, value in h.with_via(headers):
        target.add(name, value)


def _abort(request: web.BaseRequest) -> None:
    """Cut the client connection so that a short body cannot pass for a complete one."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _plain(
    status: int, reason: str, *, x_cache: str | None = None, retry_after: int | None = None
) -> web.Response:
    """One of our own answers: a one-line reason, naming no server software."""
    headers = {"X-Cache": x_cache} if x_cache is not None else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return VerbatimResponse(status=status, text=f"{status} {reason}\n", headers=headers)


class BodyTooLarge(Exception):
    """A request body (sent without Content-Length) grew past ``max_body_bytes``."""


class _Limited:
    """A request body streamed upstream that stops once it exceeds ``limit`` bytes.

    The client library wraps errors raised while it sends a body, so the verdict
    is kept here for the handler to read.
    """

    def __init__(self, content: StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._content.iter_any():
            seen += len(chunk)
            if seen > self._limit:
                self.exceeded = True
                raise BodyTooLarge(f"request body over {self._limit} bytes")
            yield chunk


def _too_large(limit: int) -> web.Response:
    response = _plain(413, f"request body larger than {limit} bytes")
    response.force_close()  # the rest of the body is not read
    return response


__all__ = ["BypassReason", "Proxy"]
