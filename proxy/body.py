"""What goes on the wire to the client for an app's response: its headers as the
app sent them, and large stored bodies without copying them per response.

``VerbatimResponse`` and ``VerbatimStreamResponse`` keep aiohttp from speaking
for the app: aiohttp sets ``Content-Type: application/octet-stream`` on any body
sent without one and always adds its own ``Server``; a proxy that did so would
tell the client something the app never said (a type the browser then trusts
over sniffing, a server the app does not run). ``Date`` is still added when
missing (RFC 9110 section 6.6.1 asks a proxy to).

On Python before 3.12.9 aiohttp joins the headers and the whole body into one
new ``bytes`` before writing (its ``SKIP_WRITELINES``), so every concurrent hit
on a 2.5 MB entry briefly held another 2.5 MB: 300 clients, 750 MB above the
cache budget (bench/memory.py). ``SlicedPayload`` writes the stored body as
memoryview slices instead, waiting for each to drain, so a response costs at
most a slice and the socket buffer, whatever the body size.

Such a body is written after the handler has returned its response, so the
handler cannot time it or count it then: ``on_sent`` is called with the bytes
actually written once the last slice is out, or the client went away. A
streamed response counts the body bytes it wrote (``body_sent``: no head, no
chunk framing), for the access log.

An app's interim responses (``103 Early Hints``) go to the client before the
final head (``send_interim``): aiohttp's server has no API for them, so their
bytes are written on the connection as its ``100 Continue`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from proxy.headers import interim_for_client
from proxy.upstream import Interim

SLICE = 64 * 1024
# Smaller bodies go out in one write: cheaper, and their copy is small.
SLICED_ABOVE = 2 * SLICE


class VerbatimStreamResponse(web.StreamResponse):
    """A response that carries no ``Content-Type`` or ``Server`` it was not given,
    and counts the body bytes written through it."""

    body_sent = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await super().write(data)
        self.body_sent += len(data)

    async def _prepare_headers(self) -> None:
        # aiohttp adds both in StreamResponse._prepare_headers, which also does the
        # framing: undo the two defaults afterwards rather than copy the rest.
        headers = self._headers
        typed = hdrs.CONTENT_TYPE in headers
        named = hdrs.SERVER in headers
        await super()._prepare_headers()
        if not typed:
            headers.popall(hdrs.CONTENT_TYPE, None)
        if not named:
            headers.popall(hdrs.SERVER, None)


class VerbatimResponse(VerbatimStreamResponse, web.Response):
    """``web.Response`` (a body known in full) with the headers it was given."""


async def send_interim(request: web.BaseRequest, interim: Interim) -> None:
    """Relay an app's interim response to the client, before any final head.

    Never to an HTTP/1.0 client (RFC 9110 section 15.2); a client already gone
    is no error: its final answer will not be written either."""
    if request.version < HttpVersion11:
        return
    head = interim_for_client(*interim)
    if head is None:
        return
    with suppress(ConnectionError):
        await request.writer.write(head)


def sliced_response(
    status: int, body: bytes | bytearray | memoryview, headers: list[tuple[str, str]]
) -> VerbatimResponse:
    """A response whose body is written slice by slice (``SlicedPayload``).

    aiohttp copies a payload's content type into the headers when the response is
    built; it is taken out again when the stored headers had none.
    """
    response = VerbatimResponse(status=status, body=SlicedPayload(body), headers=headers)
    if not any(name.lower() == "content-type" for name, _ in headers):
        del response.headers[hdrs.CONTENT_TYPE]
    return response


class SlicedPayload(Payload):
    """A stored body written slice by slice, never copied whole."""

    _autoclose = True  # bytes in memory: nothing to close

    def __init__(self, value: bytes | bytearray | memoryview, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self._size = len(value)
        self._view = memoryview(value)
        self.on_sent: Callable[[int], None] | None = None

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._view).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        sent = 0
        try:
            for start in range(0, len(view), SLICE):
                part = view[start : start + SLICE]
                await writer.write(part)
                sent += len(part)
        finally:
            # Dropped once called: the callback refers to the response, which refers
            # to this payload, a cycle that would keep the body alive until the
            # cyclic GC ran (evicted bodies held far past their last response).
            on_sent, self.on_sent = self.on_sent, None
            if on_sent is not None:
                on_sent(sent)
