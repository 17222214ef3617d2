"""Pass-through: a request forwarded as it is and its answer streamed back, both
bodies streamed, nothing stored.

Owns the request body's limit (``server.max_body_bytes``, also for bodies of
unknown length), ``Expect: 100-continue``, the response relay under
``upstream.stream_timeout`` and ``server.send_timeout``, and the invalidation an
unsafe request's success causes (RFC 9111 section 4.4). Also the small helpers
every streamed answer shares: our own plain answers, sending a head, cutting a
connection whose body was cut short.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from aiohttp import StreamReader, web
from yarl import URL

from proxy import headers as h
from proxy.accesslog import STREAM_KEY, UPSTREAM_KEY
from proxy.admission import Admission
from proxy.body import VerbatimResponse, VerbatimStreamResponse, send_interim
from proxy.entry import Headers
from proxy.keys import (
    IPNetwork,
    loose_path,
    normalise_host,
    request_host,
    resolutions,
    trusted_peer,
)
from proxy.pacing import BodyCopy, SlowClient
from proxy.stats import Stats
from proxy.tiers import Tiers
from proxy.upstream import (
    ClientBody,
    Upstream,
    UpstreamBusy,
    UpstreamError,
    UpstreamResponse,
)

if TYPE_CHECKING:
    from proxy.config import Config

log = logging.getLogger(__name__)

NO_BODY_STATUSES = frozenset({204, 304})


class Observer(Protocol):
    """Follows a forwarded answer without changing it (shadow mode, ``shadow.Follower``)."""

    def head(self, status: int, headers: Headers, content_length: int | None) -> bool:
        """The app's head (headers as kept for the client); True to be told the
        length of the whole body once it went through (``body``)."""

    def body(self, length: int) -> None:
        """The whole body went through, ``length`` bytes (not called if it was cut)."""

    def failed(self) -> None:
        """The app could not be asked, or gave no answer."""


class Passthrough:
    def __init__(
        self,
        config: Config,
        *,
        upstream: Upstream,
        admission: Admission,
        tiers: Tiers,
        stats: Stats,
    ) -> None:
        self.upstream = upstream
        self.admission = admission
        self.tiers = tiers
        self.stats = stats
        self.apply(config)

    def apply(self, config: Config) -> None:
        self.max_body_bytes = config.server.max_body_bytes
        self.trusted_proxies = config.server.trusted_proxies
        self.stream_timeout = config.upstream.stream_timeout
        self.send_timeout = config.server.send_timeout

    async def forward(
        self,
        request: web.BaseRequest,
        target: str,
        *,
        x_cache: str,
        status: str,
        invalidate: frozenset[str] | None = None,
        observer: Observer | None = None,
    ) -> web.StreamResponse:
        """Proxy the request unchanged, streaming both bodies; store nothing.
        ``x_cache`` and ``status`` (``Cache-Status``) are said on the answer;
        ``invalidate``: the paths a success drops (``policy.Bypass``); ``observer``
        is told of the answer."""
        headers = upstream_headers(request, fill=False, trusted=self.trusted_proxies)
        body: object = None
        limit = self.max_body_bytes
        if request.body_exists:
            length = request.content_length
            if length is not None and length > limit:
                return too_large(limit, x_cache)  # refused before a byte of it is read
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
                    request, target, headers, body, x_cache, status, invalidate, observer
                )
        except BodyTooLarge:
            return too_large(limit, x_cache)
        except UpstreamBusy as exc:
            log.warning("upstream busy, %s %s refused: %s", request.method, no_query(target), exc)
            if observer is not None:
                observer.failed()
            return plain(exc.status, exc.reason, x_cache=x_cache, retry_after=1)
        except UpstreamError as exc:
            if isinstance(body, _Limited) and body.exceeded:
                return too_large(limit, x_cache)
            if observer is not None:
                observer.failed()
            self.stats.upstream_failed()
            log.info("upstream %s for %s %s: %s", exc.reason, request.method, no_query(target), exc)
            return plain(exc.status, exc.reason, x_cache=x_cache)

    async def _exchange(
        self,
        request: web.BaseRequest,
        target: str,
        headers: Headers,
        body: object,
        x_cache: str,
        status: str,
        invalidate: frozenset[str] | None,
        observer: Observer | None,
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
            kept = h.response_headers_for_client(resp.headers)
            counted: _Counted | None = None
            if observer is not None and observer.head(resp.status, kept, resp.content_length):
                counted = _Counted()
            copy_headers(out, h.with_via(kept))
            out.headers["X-Cache"] = x_cache
            out.headers["Cache-Status"] = status
            if resp.content_length is not None and resp.status not in NO_BODY_STATUSES:
                out.content_length = resp.content_length
            if not await prepared(request, out):
                resp.abort()  # the client left before the head went out
                return out
            if request.method == "HEAD" or resp.status in NO_BODY_STATUSES:
                await out.write_eof()
                if counted is not None and observer is not None:
                    observer.body(0)
                return out
            if await self._relay(request, out, resp, target, counted):
                await out.write_eof()
                if counted is not None and observer is not None:
                    observer.body(counted.length)
            return out

    async def _relay(
        self,
        request: web.BaseRequest,
        out: web.StreamResponse,
        resp: UpstreamResponse,
        target: str,
        counted: _Counted | None = None,
    ) -> bool:
        """Copy a pass-through body to the client as it is read; False if it was cut.

        The app's silence is bounded by ``upstream.read_timeout`` (an app error). The
        client must take data within ``server.send_timeout`` of it being ready, and
        the whole body must be through ``upstream.stream_timeout`` after the head,
        which bounds how long the upstream slot is held. When either runs out, the
        side we were waiting on is to blame: a write counts in ``slow_clients``, a
        read as an upstream error."""
        copy = BodyCopy(
            cap=asyncio.get_running_loop().time() + self.stream_timeout, idle=self.send_timeout
        )
        chunks = resp.chunks() if counted is None else counted.through(resp.chunks())
        try:
            if await send_body(request, out, chunks, copy, self.stats, target):
                return True
        except UpstreamError as exc:
            self.stats.upstream_failed()
            log.info("upstream body cut short for %s: %s", no_query(target), exc)
        resp.abort()  # stop reading: the body will not be relayed to its end
        return False

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
        purged = 0
        for p in sorted(paths):
            purged += await self.tiers.purge("path", p)
        log.debug("%s: dropped %d entries (%s)", request.method, purged, sorted(paths))


def upstream_headers(
    request: web.BaseRequest,
    *,
    fill: bool,
    trusted: tuple[IPNetwork, ...],
    keyed: tuple[str, ...] = (),
) -> Headers:
    """What goes upstream for ``request`` (``headers.request_headers_for_upstream``);
    ``trusted`` is ``server.trusted_proxies``."""
    return h.request_headers_for_upstream(
        request.headers.items(),
        client_ip=request.remote or "",
        scheme=request.scheme,
        host=request_host(request.raw_path, request.headers.get("Host")) or "",
        fill=fill,
        keyed=keyed,
        trusted=trusted_peer(request.remote, trusted),
    )


def no_query(target: str) -> str:
    """A target for the log: query values may be secrets (the access log redacts
    them by name; other log lines leave the query out)."""
    return target.partition("?")[0]


async def send_body(
    request: web.BaseRequest,
    out: web.StreamResponse,
    chunks: AsyncIterator[bytes | memoryview],
    copy: BodyCopy,
    stats: Stats,
    target: str,
) -> bool:
    """Copy ``chunks`` to the client under ``copy``'s bounds; True once all of it
    went out. A client cut for being slow counts in ``slow_clients``. A copy cut
    short (a slow or gone client, or an error of ``chunks``, which passes through)
    closes the client connection: a short body must not pass for a complete one."""
    try:
        await copy.run(chunks, out.write)
    except SlowClient as exc:
        stats.slow_clients += 1
        log.info("client too slow for %s: cut at %s", no_query(target), exc.limit)
    except ConnectionError:
        pass  # the client left
    except UpstreamError:
        abort(request)
        raise
    else:
        return True
    abort(request)
    return False


async def prepared(request: web.BaseRequest, out: web.StreamResponse) -> bool:
    """Send the head of a streamed response; False if the client has already left."""
    try:
        await out.prepare(request)
    except ConnectionError:
        return False
    request[STREAM_KEY] = out
    return True


def copy_headers(out: web.StreamResponse, headers: Headers | list[tuple[str, str]]) -> None:
    target = out.headers
    for name, value in headers:
        target.add(name, value)


def abort(request: web.BaseRequest) -> None:
    """Cut the client connection so that a short body cannot pass for a complete one."""
    transport = request.transport
    if transport is not None:
        transport.close()


def plain(
    status: int, reason: str, *, x_cache: str | None = None, retry_after: int | None = None
) -> web.Response:
    """One of our own answers: a one-line reason, naming no server software."""
    headers = {"X-Cache": x_cache} if x_cache is not None else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return VerbatimResponse(status=status, text=f"{status} {reason}\n", headers=headers)


def too_large(limit: int, x_cache: str) -> web.Response:
    response = plain(413, f"request body larger than {limit} bytes", x_cache=x_cache)
    response.force_close()  # the rest of the body is not read
    return response


class _Counted:
    """The length of a body as it goes through (for an ``Observer``)."""

    __slots__ = ("length",)

    def __init__(self) -> None:
        self.length = 0

    async def through(
        self, chunks: AsyncIterator[bytes | memoryview]
    ) -> AsyncIterator[bytes | memoryview]:
        async for chunk in chunks:
            self.length += len(chunk)
            yield chunk


class BodyTooLarge(Exception):
    """A request body (sent without Content-Length) grew past ``max_body_bytes``."""


class _Limited:
    """A request body streamed upstream that stops once it exceeds ``limit`` bytes.

    The client library wraps errors raised while it sends a body, so the verdict
    is kept here for the caller to read.
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
