"""WebSocket tunnels: a client's handshake relayed to the app, then its messages
pumped both ways until either side closes.

Owns the tunnels' own bound (``upstream.max_tunnels``: a tunnel never holds an
upstream admission slot, it may last for hours), their closing when sidecache
stops (after the grace period, with ``1001 Going Away``), and their accounting
(bytes sent to the client, under ``X-Cache: BYPASS``). The relay is per message,
not per byte: each hop negotiates its own extensions (``permessage-deflate``), and
a message is held whole on its way through (at most ``TUNNEL_MAX_MESSAGE``).
Back-pressure: a message is read from one side only once the previous one was
written to the other (aiohttp waits for its transport to drain), and aiohttp stops
reading a socket whose unread messages pile up. The cache is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from proxy import headers as h
from proxy.accesslog import SENT_KEY, STREAM_KEY, UPSTREAM_KEY
from proxy.keys import IPNetwork
from proxy.passthrough import no_query, plain, upstream_headers
from proxy.stats import Stats
from proxy.upstream import TUNNEL_CLOSE_TIMEOUT, TUNNEL_MAX_MESSAGE, Upstream

log = logging.getLogger(__name__)

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

# Close codes that are a state, never sent in a Close frame (RFC 6455 section 7.4.1).
_UNSENDABLE = frozenset({1005, 1006, 1015})
GOING_AWAY = 1001


def relayable_close_code(code: int | None) -> int:
    """The code to pass on for a close one side sent: its own, unless it cannot be
    sent in a Close frame (then a normal closure)."""
    if code is None or code < 1000 or code >= 5000 or code in _UNSENDABLE:
        return 1000
    return code


class _Tunnel:
    """One open tunnel: its stop signal and what it sent the client."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.sent = 0


class Tunnels:
    """The open tunnels, at most ``limit`` at once."""

    def __init__(self, limit: int, *, upstream: Upstream, stats: Stats) -> None:
        self.limit = limit
        # ``server.trusted_proxies``: whose forwarding headers the handshake passes on.
        self.trusted_proxies: tuple[IPNetwork, ...] = ()
        self.upstream = upstream
        self.stats = stats
        self.draining = False
        self._open: set[_Tunnel] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()

    def __len__(self) -> int:
        return len(self._open)

    async def open(self, request: web.BaseRequest, target: str, status: str) -> web.StreamResponse:
        """Tunnel ``request`` (a WebSocket handshake) to the app's ``target``; returns
        once the tunnel is closed, or the app's refusal, or our own."""
        if self.draining:
            return plain(503, "shutting down", x_cache="BYPASS", retry_after=1)
        if len(self._open) >= self.limit:
            log.warning("%d tunnels open: %s refused", self.limit, no_query(target))
            return plain(503, f"{self.limit} tunnels open", x_cache="BYPASS", retry_after=1)
        client = web.WebSocketResponse(
            autoclose=False, max_msg_size=TUNNEL_MAX_MESSAGE, timeout=TUNNEL_CLOSE_TIMEOUT
        )
        if not client.can_prepare(request).ok:
            return plain(400, "malformed WebSocket handshake", x_cache="BYPASS")
        tunnel = _Tunnel()
        self._open.add(tunnel)
        self._none_open.clear()
        try:
            return await self._run(request, target, status, tunnel)
        finally:
            self._open.discard(tunnel)
            if not self._open:
                self._none_open.set()
            request[SENT_KEY] = tunnel.sent

    async def _run(
        self, request: web.BaseRequest, target: str, status: str, tunnel: _Tunnel
    ) -> web.StreamResponse:
        headers = h.tunnel_handshake_headers(
            upstream_headers(request, fill=False, trusted=self.trusted_proxies)
        )
        offered = tuple(
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in value.split(",")
            if p.strip()
        )
        started = time.perf_counter()
        try:
            app = await self.upstream.websocket(target, headers, offered)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status >= 400:  # the app's refusal, relayed
                return plain(exc.status, "WebSocket handshake refused", x_cache="BYPASS")
            log.info("upstream answered %d to a WebSocket handshake for %s", exc.status, target)
            return plain(502, "upstream did not switch to WebSocket", x_cache="BYPASS")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.upstream_failed()
            log.info("upstream unreachable for a WebSocket to %s: %r", no_query(target), exc)
            return plain(502, "upstream unreachable", x_cache="BYPASS")
        request[UPSTREAM_KEY] = time.perf_counter() - started
        try:
            client = web.WebSocketResponse(
                protocols=(app.protocol,) if app.protocol else (),
                autoclose=False,
                max_msg_size=TUNNEL_MAX_MESSAGE,
                timeout=TUNNEL_CLOSE_TIMEOUT,
            )
            client.headers["Via"] = h.VIA_VALUE
            client.headers["X-Cache"] = "BYPASS"
            client.headers["Cache-Status"] = status
            try:
                await client.prepare(request)
            except ConnectionError:
                return client  # the client left during the handshake
            request[STREAM_KEY] = client
            await self._pump_both(client, app, tunnel)
            return client
        finally:
            await app.close()

    async def _pump_both(
        self, client: web.WebSocketResponse, app: aiohttp.ClientWebSocketResponse, tunnel: _Tunnel
    ) -> None:
        """Relay until either side closes (the close, with its code, goes to the
        other) or sidecache stops (both are closed with ``1001``)."""
        to_client = asyncio.ensure_future(_pump(app, client, tunnel))
        to_app = asyncio.ensure_future(_pump(client, app, None))
        stopping = asyncio.ensure_future(tunnel.stop.wait())
        pending: set[asyncio.Future[Any]] = {to_client, to_app, stopping}
        try:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        code = GOING_AWAY if stopping in done else 1000
        for ws in (client, app):
            with contextlib.suppress(ConnectionError, TimeoutError):
                await ws.close(code=code)

    async def close(self, wait: float) -> None:
        """Close every open tunnel (``1001 Going Away`` to both sides), waiting up
        to ``wait`` seconds for them to end."""
        self.draining = True
        for tunnel in self._open:
            tunnel.stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._none_open.wait()


async def _pump(source: Socket, sink: Socket, tunnel: _Tunnel | None) -> None:
    """Copy ``source``'s messages to ``sink`` until ``source`` closes; its close
    goes on to ``sink`` with its code and reason. ``tunnel``: count what was sent."""
    while True:
        msg = await source.receive()
        try:
            match msg.type:
                case aiohttp.WSMsgType.TEXT:
                    await sink.send_str(msg.data)
                    if tunnel is not None:
                        tunnel.sent += len(msg.data.encode())
                case aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(msg.data)
                    if tunnel is not None:
                        tunnel.sent += len(msg.data)
                case aiohttp.WSMsgType.CLOSE:
                    await sink.close(
                        code=relayable_close_code(msg.data), message=(msg.extra or "").encode()
                    )
                    return
                case _:  # closed, or an error (a bad frame, a cut connection)
                    return
        except ConnectionError:
            return  # the sink is gone: the other pump sees it
