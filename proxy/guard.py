"""Client-side limits of the public port that aiohttp does not enforce itself.

Owns the request-head timeout: a connection must deliver each request's head
(request line and headers) within ``header_timeout`` of its first byte (or of
the connection opening), else it is closed. This is what stops a client that
trickles headers to hold a connection and a handler slot forever (slowloris).
Idle keep-alive connections are closed by aiohttp's own ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from proxy.body import VerbatimResponse

log = logging.getLogger(__name__)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol, with a deadline on every request head."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm()  # a complete head arrived
        elif data and self._head_timer is None and not self._request_in_progress:
            self._arm()  # the first bytes of a new head

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own error answer (a malformed request, a handler that failed),
        without the ``Server`` header that names aiohttp and its version."""
        page = super().handle_error(request, status, exc, message)
        assert isinstance(page, web.Response)
        answer = VerbatimResponse(status=page.status, body=page.body, headers=page.headers)
        answer.force_close()
        return answer

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._request_in_progress or self._messages:
            return  # the head did arrive; what is slow is the body or the handler
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.info("closing %s: no complete request head within %gs", peer, self.header_timeout)
        self.force_close()


class GuardedServer(web.Server):
    """``web.Server`` whose connections use ``GuardedRequestHandler``."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def pre_shutdown(self) -> None:
        """Close keep-alive connections after their request, but not upgraded ones:
        aiohttp's protocol drops every byte received once it is closing, which
        would freeze a WebSocket tunnel for the whole grace period (tunnels are
        closed after it: ``proxy.tunnel``)."""
        for conn in self.connections:
            if not conn._upgraded:
                conn.close()

    def requests_in_progress(self) -> int:
        """Requests being handled or answered now, on every connection."""
        return sum(1 for conn in self.connections if conn._request_in_progress)

    def __call__(self) -> RequestHandler:
        protocol = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        protocol.header_timeout = self._header_timeout
        return protocol
