"""The upstream client: one pooled aiohttp session, streaming, error translation.

Owns the connection pool to the application and the single place where
aiohttp's client exceptions become ours (``UpstreamTimeout`` -> 504,
``UpstreamUnavailable`` and ``UpstreamBroken`` -> 502). Nothing here knows about
caching.

It also owns how each connection reads responses (``_FramedProtocol``, aiohttp's
response protocol with two additions): bytes an app sends past the end of its
response (``proxy.framing``) are dropped with the connection and logged instead
of failing the response or being read as the next one; and the app's interim
``1xx`` responses, which aiohttp's client reads and drops
(``ClientResponse.start``), are handed to the caller's ``interim`` callback first.

And how connections are reused (``proxy.reuse``): the pool keeps an idle
connection for ``upstream.keepalive_timeout`` at most, less when the app's
``Keep-Alive: timeout`` says it closes sooner (``_Connector``); a request that
fails on a reused connection before any byte of its response is sent once more
on a new connection when it can be (``Upstream.request``). aiohttp's own retry
is off: it would take another pooled connection, which the app may have closed
as well, and could not be counted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, assert_never, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from aiohttp.tracing import Trace
from yarl import URL

from proxy.entry import Headers
from proxy.framing import Framing, Phase
from proxy.reuse import REPLAY_BYTES, Replay, idle_budget, replay

if TYPE_CHECKING:
    from proxy.config import UpstreamConfig

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
# Readiness probes in flight at once, each on a connection of its own.
PROBE_CONNECTIONS = 4


class Interim(NamedTuple):
    """An interim (``1xx``) response the app sent before its final one."""

    status: int
    reason: str
    headers: Headers


InterimSink = Callable[[Interim], Awaitable[None]]


class UpstreamError(Exception):
    """The upstream could not deliver a complete response."""

    status = 502
    reason = "upstream error"


class UpstreamUnavailable(UpstreamError):
    """Connection refused, reset or closed before a response started."""

    reason = "upstream unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "upstream timed out"


class UpstreamBusy(UpstreamError):
    """No upstream slot became free within ``queue_timeout`` (admission control)."""

    status = 503
    reason = "upstream busy"


class UpstreamBroken(UpstreamError):
    """A malformed response, or a body cut short."""

    reason = "upstream response broken"


@contextmanager
def translate_errors() -> Iterator[None]:
    """Map aiohttp's client exceptions (and timeouts) to ours, in one place."""
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(str(exc) or "timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamBroken(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamBroken(str(exc)) from exc
    except (aiohttp.ClientConnectionError, ConnectionError, OSError) as exc:
        raise UpstreamUnavailable(str(exc) or type(exc).__name__) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamBroken(str(exc) or type(exc).__name__) from exc


class UpstreamResponse:
    """A response whose body has not been read yet."""

    __slots__ = ("_resp", "content_length", "headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.headers: Headers = tuple(resp.headers.items())
        self.content_length = resp.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamError if it is cut short."""
        content = self._resp.content
        while True:
            with translate_errors():
                chunk = await content.readany()
            if not chunk:
                return
            yield chunk

    def abort(self) -> None:
        """Drop the connection: the body will not be read to its end."""
        self._resp.close()


@dataclass(frozen=True, slots=True)
class ClientBody:
    """A client's request body of declared ``length``, not read yet: read whole
    before it is sent up to ``proxy.reuse.REPLAY_BYTES``, so that it can be sent
    again on a new connection; streamed if larger."""

    content: StreamReader
    length: int

    @property
    def replayable(self) -> bool:
        return self.length <= REPLAY_BYTES


@dataclass(slots=True)
class _Exchange:
    """One attempt at a request: what its connection needs for log lines and 1xx,
    and what the connection saw, for the retry rule (``proxy.reuse.replay``)."""

    method: str
    path: str  # without the query: its values may be secrets
    interim: InterimSink | None
    fresh: bool = False  # a retry: only a new connection may carry it
    reused: bool = False  # set by the connection: it had carried a request before
    answered: bool = False  # set by the connection: a byte of the response arrived


# Set around each attempt: aiohttp takes a pooled connection (``_Connector._get``)
# and gives it its response parameters (``set_response_params``) in the requesting
# task, where the connector and the protocol read it.
_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("sidecache_upstream_exchange", default=None)


class _FramedProtocol(ResponseHandler):
    """aiohttp's response protocol, fed one head or one declared body at a time.

    aiohttp's parser reads on past a response's end as if a next response
    followed: with the C parser, bytes past ``Content-Length`` in the same read
    fail the whole response ("Bad status line"), and bytes arriving later would
    be taken for the next request's response. Here each read is cut where the
    response ends (``proxy.framing``); the excess is dropped, the connection
    closed so that it is never reused, and a warning logged.

    It also notes, for the retry rule, whether a request is not the first on the
    connection and whether any byte of its response arrived, and the ``Keep-Alive``
    values of the last response, for the pool (``_Connector``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._framing = Framing()
        self._exchange: _Exchange | None = None
        self._uses = 0
        # The last final response's ``Keep-Alive`` values, and until when (the
        # connector's clock) the connection may be reused, set on its release.
        self.keep_alive: tuple[str, ...] = ()
        self.idle_until = float("inf")

    def set_response_params(self, **params: Any) -> None:
        # Called once per request sent on this connection, before it is written.
        exchange = self._exchange = _EXCHANGE.get()
        if exchange is not None:
            exchange.reused = self._uses > 0
        self._uses += 1
        self.keep_alive = ()
        self._framing.start(head_request=bool(params.get("skip_payload", False)))
        super().set_response_params(**params)

    def feed_data(self, data: tuple[RawResponseMessage, StreamReader], size: int = 0) -> None:
        framing = self._framing
        if framing.phase is Phase.HEAD_READ:  # the head just handed over, parsed
            message = data[0]
            framing.head(
                message.code,
                content_length=message.headers.get("Content-Length"),
                chunked=message.chunked,
            )
        super().feed_data(data, size)

    def data_received(self, data: bytes) -> None:
        if data and self._exchange is not None:
            self._exchange.answered = True
        framing = self._framing
        if not data or framing.phase is Phase.UNTRACKED:
            super().data_received(data)
            return
        while data:
            taken = framing.cut(data)
            if not taken:
                self._drop_excess(len(data))
                return
            part, data = (data, b"") if taken == len(data) else (data[:taken], data[taken:])
            if data and framing.phase is Phase.DONE:
                # Before the body's last bytes complete the response and release
                # the connection: it must go back closed, not to the pool.
                self.force_close()
            super().data_received(part)
            if framing.phase is Phase.HEAD_READ:
                framing.untracked()  # the parser made no response of that head

    def _drop_excess(self, size: int) -> None:
        self.force_close()
        if self.transport is not None:
            self.transport.close()  # no more reads: idle in the pool, or not
        exchange = self._exchange
        log.warning(
            "upstream sent %d bytes or more past the end of its response (%s) to %s %s: "
            "dropped with the connection, the response served as declared",
            size,
            self._framing.end,
            exchange.method if exchange is not None else "-",
            exchange.path if exchange is not None else "-",
        )

    async def read(self) -> tuple[RawResponseMessage, StreamReader]:
        message, payload = await super().read()
        if message.code >= 200:
            self.keep_alive = tuple(message.headers.getall("Keep-Alive", ()))
        sink = self._exchange.interim if self._exchange is not None else None
        # aiohttp's ClientResponse.start reads interim responses and drops them.
        if sink is not None and 100 <= message.code < 200 and message.code != 101:
            headers = tuple(message.headers.items())
            await sink(Interim(message.code, message.reason, headers))
        return message, payload


class _Connector(aiohttp.TCPConnector):
    """A TCP connector whose connections read responses with ``_FramedProtocol``,
    and are reused only within their idle budget (``proxy.reuse.idle_budget``).

    aiohttp keeps one idle time for the whole pool, on its own clock; here each
    connection gets a deadline when it is released (``_release``) on ``clock``,
    and one past it is closed before aiohttp picks the next pooled connection
    (``_get``). ``keepalive_timeout`` None: connections are never kept."""

    def __init__(
        self,
        *,
        keepalive_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        if keepalive_timeout is None:
            super().__init__(force_close=True, **kwargs)
        else:
            super().__init__(keepalive_timeout=keepalive_timeout, **kwargs)
        framed = functools.partial(_FramedProtocol, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", framed)
        self._idle = keepalive_timeout
        self._clock = clock

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        if self._idle is not None and isinstance(protocol, _FramedProtocol):
            budget = idle_budget(self._idle, protocol.keep_alive)
            protocol.idle_until = self._clock() + budget
            should_close = should_close or budget <= 0
        super()._release(key, protocol, should_close=should_close)

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        exchange = _EXCHANGE.get()
        if exchange is not None and exchange.fresh:
            return None  # a retry goes on a new connection, never another pooled one
        # aiohttp reuses the first connected one from the left: close those whose
        # budget ran out until that one is within its own.
        now = self._clock()
        for protocol, _ in self._conns.get(key, ()):
            if not protocol.is_connected():
                continue  # aiohttp drops it
            if not isinstance(protocol, _FramedProtocol) or now < protocol.idle_until:
                break
            protocol.close()
        return await super()._get(key, traces)


# The largest WebSocket message relayed (aiohttp's default; a tunnel relays whole
# messages), and how long a closing handshake is waited for.
TUNNEL_MAX_MESSAGE = 4 * 1024 * 1024
TUNNEL_CLOSE_TIMEOUT = 5.0


class Upstream:
    """The pooled client for one upstream base URL."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_retry = on_retry
        self.base = URL(config.url)
        self.host_header = self.base.raw_authority
        self._session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._tunnel_session: aiohttp.ClientSession | None = None
        self._whole_timeout = aiohttp.ClientTimeout(
            total=config.timeout,
            sock_connect=config.connect_timeout,
            sock_read=config.read_timeout,
        )
        self._relay_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )

    async def start(self) -> None:
        connector = _Connector(
            limit=self.config.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.config.keepalive_timeout,
            clock=self._clock,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._whole_timeout,
            # The proxy forwards bytes: no decompression, no cookie jar shared
            # between clients, no headers the client did not send.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            raise_for_status=False,
        )
        # Retries are ours (``_send``): aiohttp's would resend an idempotent request
        # on another pooled connection, uncounted. (No public switch: aiohttp's own
        # test client turns it off the same way.)
        self._session._retry_connection = False
        # Readiness asks on its own connections, outside the pool and the admission
        # slots: an app busy with max_connections requests still answers, and is ready.
        self._probe_session = aiohttp.ClientSession(
            connector=_Connector(limit=PROBE_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(sock_connect=self.config.connect_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

        # WebSocket tunnels hold their connection for as long as they last: their
        # own pool, bounded by ``max_tunnels``, never the requests' connections.
        self._tunnel_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.max_tunnels, force_close=True),
            timeout=aiohttp.ClientTimeout(
                total=self.config.timeout, sock_connect=self.config.connect_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )

    async def close(self) -> None:
        for session in (self._session, self._probe_session, self._tunnel_session):
            if session is not None:
                await session.close()
        self._session = self._probe_session = self._tunnel_session = None

    async def websocket(
        self, target: str, headers: Headers, protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket to the app for ``target``: the handshake is bounded by
        ``timeout``, the tunnel's silences are not (the ends decide). Raises
        ``aiohttp.WSServerHandshakeError`` when the app refuses it, and aiohttp's
        other client errors when it cannot be reached."""
        assert self._tunnel_session is not None, "Upstream.start() was not awaited"
        url = URL(str(self.base) + target, encoded=True)
        return await self._tunnel_session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoclose=False,
            autoping=True,
            max_msg_size=TUNNEL_MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=TUNNEL_CLOSE_TIMEOUT),
        )

    @asynccontextmanager
    async def request(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: Any = None,
        *,
        relayed: bool = False,
        interim: InterimSink | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request for ``target`` (raw path and query) and yield its response.

        ``timeout`` bounds the whole response, unless the body is ``relayed`` (to a
        client, or into a cache fill that a client streams) as it is read: then it
        bounds the response head only, and the body is bounded by ``read_timeout``
        (silence) and by the caller (``proxy.pacing``), so that a slow client is not
        taken for a failing app. (aiohttp's ``total`` covers the body
        reads too: ``StreamReader`` waits under the request's timer.)

        ``interim`` is awaited with each interim response (``1xx``, ``101`` aside)
        the app sends before its final one, in order, before this yields.

        ``body``: None, ``bytes``, a ``ClientBody`` (read whole first if small
        enough to be sent again), or any other async iterable of bytes (streamed).
        A request that fails on a reused connection before any byte of its response
        arrived is sent once more on a new connection if it has no body or its
        body is in memory (``proxy.reuse.replay``); each such retry is reported to
        ``on_retry``.

        The response is released (the connection returned to the pool, or closed
        if the body was not read to its end) when the block exits.
        """
        assert self._session is not None, "Upstream.start() was not awaited"
        url = URL(str(self.base) + target, encoded=True)
        exchange = _Exchange(method, target.partition("?")[0], interim)
        with translate_errors():
            async with asyncio.timeout(self.config.timeout if relayed else None):
                if isinstance(body, ClientBody):
                    body = (
                        await body.content.readexactly(body.length)
                        if body.replayable
                        else body.content
                    )
                resp = await self._send(exchange, url, headers, body, relayed=relayed)
        try:
            yield UpstreamResponse(resp)
        finally:
            resp.release()

    async def _send(
        self, exchange: _Exchange, url: URL, headers: Headers, body: Any, *, relayed: bool
    ) -> aiohttp.ClientResponse:
        """Send the request; once more on a new connection if ``proxy.reuse`` allows."""
        try:
            with translate_errors():
                return await self._attempt(exchange, url, headers, body, relayed=relayed)
        except UpstreamUnavailable as exc:
            decision = replay(
                reused=exchange.reused,
                answered=exchange.answered,
                replayable=body is None or isinstance(body, bytes),
            )
            match decision:
                case Replay.RETRY:
                    # Any method, a POST with its body too: the app closed the idle
                    # connection without reading the request (proxy.reuse.replay).
                    log.info(
                        "upstream closed a reused connection before answering %s %s (%s): %s",
                        exchange.method,
                        exchange.path,
                        exc,
                        decision.value,
                    )
                case Replay.ANSWERED | Replay.STREAMED:
                    log.info(
                        "upstream failed on a reused connection for %s %s, not sent again: %s",
                        exchange.method,
                        exchange.path,
                        decision.value,
                    )
                    raise
                case Replay.NEW_CONNECTION:
                    raise
                case _:
                    assert_never(decision)
        self._on_retry()
        again = _Exchange(exchange.method, exchange.path, exchange.interim, fresh=True)
        return await self._attempt(again, url, headers, body, relayed=relayed)

    async def _attempt(
        self, exchange: _Exchange, url: URL, headers: Headers, body: Any, *, relayed: bool
    ) -> aiohttp.ClientResponse:
        assert self._session is not None
        token = _EXCHANGE.set(exchange)
        try:
            return await self._session.request(
                exchange.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
                timeout=self._relay_timeout if relayed else self._whole_timeout,
            )
        finally:
            _EXCHANGE.reset(token)

    async def probe(self) -> bool:
        """Does the upstream answer HTTP at all? Used by ``/readyz`` (the caller bounds it).

        A fresh connection of its own: it never waits for a pooled connection nor
        for an admission slot."""
        assert self._probe_session is not None, "Upstream.start() was not awaited"
        try:
            with translate_errors():
                async with self._probe_session.head(self.base, allow_redirects=False):
                    return True
        except UpstreamError:
            return False
