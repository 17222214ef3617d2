"""The public port's protocol: aiohttp's, with plain hits answered as they are
parsed, and the client-side limits aiohttp does not enforce itself.

Plain hits: when a connection is idle (its previous answers written or handed
to the transport), each request head aiohttp's parser (llhttp) delivers is
first offered to ``Proxy.fast_hit``; a plain hit of a ``GET`` or ``HEAD`` is
written at once, as the entry's prepared head and its body, without a request
object, a task or a response object (a third of the time of a hit answered
the usual way: BENCHMARKS.md). Anything else, and every request behind one
that is not such a hit, takes aiohttp's path to ``Proxy.__call__``, in order.
The parser, its limits and its ``400`` answers are aiohttp's either way.

A large hit's body is handed to the transport whole (uvloop keeps a reference,
no copy); while the client has not taken it, no other hit is answered this way
on that connection, and a client that takes nothing of it for
``server.send_timeout`` is cut and counted in ``slow_clients``. It is timed and
logged once the transport has it all, or the client left (with the body bytes
the transport had sent then).

Request-head timeout: a connection must deliver each request's head (request
line and headers) within ``header_timeout`` of its first byte (or of the
connection opening), else it is closed. This is what stops a client that
trickles headers to hold a connection and a handler slot forever (slowloris).
Idle keep-alive connections are closed by aiohttp's own ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import HttpVersion11, web
from aiohttp.streams import EmptyStreamReader
from aiohttp.web_protocol import RequestHandler

from proxy.body import VerbatimResponse

if TYPE_CHECKING:
    from proxy.handler import FastHit, Proxy

log = logging.getLogger(__name__)

# Bodies up to this size go out in the same write as their head (one copy of a
# small body is cheaper than a second buffer); larger ones are handed over as
# they are stored.
JOINED_UP_TO = 16 * 1024


class _Pending(NamedTuple):
    """A large hit whose body the transport still holds."""

    hit: FastHit
    method: str
    raw: str
    # Kept here: aiohttp's close lets go of ``self.transport`` while it still sends.
    transport: asyncio.Transport


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol, with a deadline on every request head."""

    header_timeout: float = 10.0
    proxy: Proxy | None = None  # answers plain hits as they are parsed
    # The largest body answered that way: on loops whose transports copy what the
    # socket does not take at once (asyncio's before 3.12), only what is joined
    # to its head anyway; uvloop's keep a reference.
    largest: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._pending: _Pending | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._left = 0  # bytes the transport held at the last look, while pending
        peer = transport.get_extra_info("peername")
        # What aiohttp's request.remote says: the address of a TCP peer.
        self._remote: str | None = peer[0] if isinstance(peer, (list, tuple)) else None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        waiter = self._waiter
        if (
            waiter is not None
            and self.proxy is not None
            and not waiter.done()  # idle: the previous request is answered
            and not self._messages
            and not self._paused
            and self._payload_parser is None
            and not self._upgraded
            and not self._close
            and not self._force_close
        ):
            # Parse with the waiter hidden: the requests answered here must not
            # wake the handler loop, which would find nothing to handle.
            self._waiter = None
            try:
                super().data_received(data)
                self._answer_parsed()
            finally:
                self._waiter = waiter
            if self._messages and not waiter.done():
                waiter.set_result(None)
        else:
            super().data_received(data)
        if self._request_count > before:
            self._disarm()  # a complete head arrived
        elif data and self._head_timer is None and not self._request_in_progress:
            self._arm()  # the first bytes of a new head

    def _answer_parsed(self) -> None:
        """Answer the hits parsed so far, and go on parsing while hits empty the
        queue: aiohttp's parser stops after ``MAX_MSG_QUEUE_SIZE`` requests in
        flight, keeps the rest of what it was fed and pauses reading until the
        queue drains, which ``start()`` would notice only for requests it handles."""
        while self._messages:
            self._answer_hits()
            if self._messages or not self._buffer_paused or self._close or self._force_close:
                return  # what is left (if anything) goes to start(), in order
            super().data_received(b"")  # the requests the parser kept
            if not self._messages:
                self._resume_reading_for_buffer()  # none left: read again
                return

    def _answer_hits(self) -> None:
        """Answer the plain hits at the front of the queue (``Proxy.fast_hit``); stop
        at the first request that is not one: it and the rest go to ``start()``."""
        proxy = self.proxy
        assert proxy is not None and self._parser is not None
        messages = self._messages
        answered = False
        while messages and not self._paused and self.transport is not None:
            message, payload = messages[0]
            method = getattr(message, "method", None)  # aiohttp's _ErrInfo has none
            if (
                (method != "GET" and method != "HEAD")
                or message.version != HttpVersion11  # type: ignore[union-attr]
                or message.should_close  # type: ignore[union-attr]
            ):
                break
            try:
                hit = proxy.fast_hit(
                    method,
                    message.path,  # type: ignore[union-attr]
                    message.headers,  # type: ignore[union-attr]
                    message.raw_headers,  # type: ignore[union-attr]
                    payload.__class__ is not EmptyStreamReader,
                    self._remote,
                    self.largest,
                )
            except Exception:
                # A fault here must not take the connection down with it: the
                # handler's path answers the request (and reports what fails there).
                log.exception("answering a hit in the protocol failed; handing it on")
                break
            if hit is None:
                break
            messages.popleft()
            self._parser.message_consumed()
            self._send(hit, method, message.path)  # type: ignore[union-attr]
            answered = True
            if self._manager is not None:
                self._manager.requests_count += 1
        # What start() does after each request: the keep-alive clock restarts.
        if answered and self._keepalive_timeout > 0 and not self._close and not self._force_close:
            close_time = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def _send(self, hit: FastHit, method: str, raw: str) -> None:
        transport = self.transport
        assert transport is not None and self.proxy is not None
        body = hit.body
        if body is None:
            transport.write(hit.head)
            self.proxy.account_fast_hit(hit, method, raw, self._remote, 0)
            return
        if len(body) <= JOINED_UP_TO:
            transport.write(hit.head + body)
            self.proxy.account_fast_hit(hit, method, raw, self._remote, len(body))
            return
        transport.writelines((hit.head, body))
        if not self._paused:
            # What the transport holds now is under its high-water mark: as good
            # as sent (aiohttp's own writes count the same way).
            self.proxy.account_fast_hit(hit, method, raw, self._remote, len(body))
            return
        self._pending = _Pending(hit, method, raw, transport)
        self._left = transport.get_write_buffer_size()
        self._send_timer = self._loop.call_later(self.proxy.send_timeout, self._send_check)

    @property
    def sending(self) -> bool:
        """Is a large hit's body still being taken by the client?"""
        return self._pending is not None

    def _send_check(self) -> None:
        """``server.send_timeout`` after a large hit's body was handed over, or after
        the last sign of progress: cut the client if it took nothing since."""
        self._send_timer = None
        if self._pending is None or self.proxy is None:
            return
        transport = self._pending.transport
        left = transport.get_write_buffer_size()
        if left < self._left:
            self._left = left
            self._send_timer = self._loop.call_later(self.proxy.send_timeout, self._send_check)
            return
        self.proxy.stats.slow_clients += 1
        log.info("client too slow for %s: cut at server.send_timeout", self._pending.raw)
        self._settle_pending()
        transport.abort()

    def _settle_pending(self) -> None:
        """Account for the pending large hit with what the transport had sent of it
        at the last look (``_left``: what it still held then)."""
        pending, self._pending = self._pending, None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if pending is None or self.proxy is None:
            return
        hit = pending.hit
        size = len(hit.body) if hit.body is not None else 0
        sent = max(0, min(size, size - self._left))
        self.proxy.account_fast_hit(hit, pending.method, pending.raw, self._remote, sent)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._pending is not None:
            # The rest is under the low-water mark: as good as sent.
            self._left = 0
            self._settle_pending()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._pending is not None:
            self._settle_pending()
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

    def __init__(
        self, handler: Any, *, header_timeout: float, fast: Proxy | None = None, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout
        # Answers plain hits in the protocol (None: every request goes to ``handler``).
        self.fast = fast

    def pre_shutdown(self) -> None:
        """Close keep-alive connections after their request, but not upgraded ones:
        aiohttp's protocol drops every byte received once it is closing, which
        would freeze a WebSocket tunnel for the whole grace period (tunnels are
        closed after it: ``proxy.tunnel``)."""
        for conn in self.connections:
            if not conn._upgraded:
                conn.close()

    def requests_in_progress(self) -> int:
        """Requests being handled or answered now, on every connection: a large
        hit the protocol handed over and the client has not taken yet counts, so
        that a stop waits for it within its grace period as for any other."""
        return sum(
            1
            for conn in self.connections
            if conn._request_in_progress
            or (isinstance(conn, GuardedRequestHandler) and conn.sending)
        )

    def __call__(self) -> RequestHandler:
        protocol = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        protocol.header_timeout = self._header_timeout
        protocol.proxy = self.fast
        protocol.largest = None if _references_writes(self._loop) else JOINED_UP_TO
        return protocol


def _references_writes(loop: asyncio.AbstractEventLoop) -> bool:
    """Does the loop's transport keep a reference to what it could not send at once
    (uvloop), rather than a copy (asyncio's selector transports)?"""
    return type(loop).__module__.startswith("uvloop")
