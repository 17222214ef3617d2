"""What reaches the wire: the app's response headers as it sent them, and request
header bytes either forwarded intact or refused.

The upstream here is written on raw asyncio streams, so that it can answer
without ``Content-Type``, ``Date`` or ``Server`` (a framework would add them) and
record the request bytes exactly as they arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.integration.conftest import Factory, Running

LARGE = 200_000  # above body.SLICED_ABOVE: written by SlicedPayload


@dataclass
class RawUpstream:
    """Answers every GET with ``size`` bytes, ``Cache-Control: max-age=60`` and only
    the headers its query names (``server=``, ``type=``); counts and keeps the
    request heads. A ``gated`` query waits for ``gate`` before answering; a
    ``chunked`` one sends its body chunked (a streamed answer), ``status=304`` a
    ``304`` with no body."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                self.arrived.set()
                query = parse_qs(urlsplit(head.split(b" ", 2)[1].decode()).query)
                if "gated" in query:
                    await self.gate.wait()
                size = int(query.get("size", ["1000"])[0])
                status = query.get("status", ["200"])[0]
                chunked = "chunked" in query
                body = b"" if status == "304" else b"b" * size
                lines = [f"HTTP/1.1 {status} {'Not Modified' if status == '304' else 'OK'}"]
                if chunked:
                    lines.append("Transfer-Encoding: chunked")
                    body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
                elif status != "304":
                    lines.append(f"Content-Length: {size}")
                lines.append("Cache-Control: max-age=60")
                lines += [f"Server: {v}" for v in query.get("server", [])]
                lines += [f"Content-Type: {v}" for v in query.get("type", [])]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    yield upstream
    server.close()
    await server.wait_closed()


async def proxy_for(sidecache: Factory, upstream: RawUpstream) -> Running:
    return await sidecache(
        [{"name": "photo", "match": "/api/photo/{id}", "ttl": "5m"}], upstream_url=upstream.url
    )


async def fetch(
    client: aiohttp.ClientSession, url: object, **headers: str
) -> tuple[int, dict[str, list[str]], bytes]:
    """Status, the headers as received (lower-case name -> values), and the body."""
    async with client.get(str(url), headers=headers) as r:
        received: dict[str, list[str]] = {}
        for name, value in r.raw_headers:
            received.setdefault(name.decode().lower(), []).append(value.decode())
        return r.status, received, await r.read()


def app_said(received: dict[str, list[str]], server: str | None) -> None:
    """No ``Content-Type``; ``Server`` only as the app sent it."""
    assert "content-type" not in received
    assert received.get("server") == ([server] if server is not None else None)


@pytest.mark.parametrize("size", [1000, LARGE])
@pytest.mark.parametrize("server", [None, "photo-app/1.0"])
async def test_no_content_type_or_server_that_the_app_did_not_send(
    sidecache: Factory,
    raw_upstream: RawUpstream,
    client: aiohttp.ClientSession,
    size: int,
    server: str | None,
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    query = f"size={size}" + (f"&server={server}" if server else "")
    url = proxy.url.with_path("/api/photo/1").with_query(query)
    # A miss streamed to the client who caused the fill, then hits of the stored entry.
    for x_cache in ("MISS", "HIT"):
        status, received, body = await fetch(client, url)
        assert (status, received["x-cache"], len(body)) == (200, [x_cache], size)
        app_said(received, server)
        assert set(received) >= {"content-length", "cache-control", "date", "via"}
    etag = received["etag"][0]
    # Answers built from the entry: a range, an unsatisfiable range, 304 and 412.
    for headers, expected in (
        ({"Range": "bytes=0-9"}, 206),
        ({"Range": f"bytes={size}-"}, 416),
        ({"If-None-Match": etag}, 304),
        ({"If-Match": '"other"'}, 412),
    ):
        status, received, _ = await fetch(client, url, **headers)
        assert status == expected
        app_said(received, server)
    # A request no route matches, passed through.
    status, received, body = await fetch(client, url.with_path("/elsewhere").with_query(query))
    assert (status, received["x-cache"], len(body)) == (200, ["BYPASS"], size)
    app_said(received, server)


async def test_an_app_content_type_is_kept_as_sent(
    sidecache: Factory, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    for size in (1000, LARGE):
        url = proxy.url.with_path(f"/api/photo/t{size}").with_query(size=size, type="image/webp")
        for x_cache in ("MISS", "HIT"):
            _, received, _ = await fetch(client, url)
            assert received["x-cache"] == [x_cache]
            assert received["content-type"] == ["image/webp"]


async def test_waiters_on_a_fill_get_the_app_headers_only(
    sidecache: Factory, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    url = proxy.url.with_path("/api/photo/2").with_query(size=LARGE, gated="1")
    leader = asyncio.create_task(fetch(client, url))
    async with asyncio.timeout(10):
        await raw_upstream.arrived.wait()
    follower = asyncio.create_task(fetch(client, url))
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(1)
    raw_upstream.gate.set()
    for task, x_cache in ((leader, "MISS"), (follower, "HIT")):
        status, received, body = await task
        assert (status, received["x-cache"], len(body)) == (200, [x_cache], LARGE)
        app_said(received, None)
    assert len(raw_upstream.heads) == 1


async def raw_exchange(proxy: Running, head: bytes) -> bytes:
    """Send one request head on a fresh connection; the status line of the answer."""
    reader, writer = await asyncio.open_connection(proxy.url.host, proxy.url.port)
    try:
        writer.write(head)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/api/photo/5", "/elsewhere"])
async def test_a_header_value_that_is_not_utf8_is_refused(
    sidecache: Factory, raw_upstream: RawUpstream, client: aiohttp.ClientSession, path: str
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    head = f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Tag: a".encode() + b"\xff" + b"b\r\n\r\n"
    assert await raw_exchange(proxy, head) == b"HTTP/1.1 400 Bad Request\r\n"
    assert raw_upstream.heads == []
    # Nothing was stored or sent: the next client gets the app's answer.
    status, received, body = await fetch(client, proxy.url.with_path(path), **{"X-Tag": "ab"})
    assert (status, len(body)) == (200, 1000)
    assert received["x-cache"] == ["MISS" if path.startswith("/api") else "BYPASS"]
    assert len(raw_upstream.heads) == 1
    assert b"\r\nX-Tag: ab\r\n" in raw_upstream.heads[0]


@pytest.mark.parametrize("path", ["/api/photo/6", "/elsewhere"])
async def test_a_utf8_header_value_reaches_the_app_byte_for_byte(
    sidecache: Factory, raw_upstream: RawUpstream, path: str
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    value = "caf\u00e9 \u65e5\u672c".encode()
    head = f"GET {path} HTTP/1.1\r\nHost: a\r\n".encode() + b"X-Tag: " + value + b"\r\n\r\n"
    assert await raw_exchange(proxy, head) == b"HTTP/1.1 200 OK\r\n"
    (arrived,) = raw_upstream.heads
    assert b"\r\nX-Tag: " + value + b"\r\n" in arrived


@pytest.mark.parametrize("server", [None, "photo-app/1.0"])
async def test_streamed_answers_and_an_app_304_carry_only_the_app_server(
    sidecache: Factory, raw_upstream: RawUpstream, client: aiohttp.ClientSession, server: str | None
) -> None:
    proxy = await proxy_for(sidecache, raw_upstream)
    named = f"&server={server}" if server else ""
    # A chunked answer: streamed to the client who caused the fill, then a hit,
    # and streamed through on a pass-through.
    url = proxy.url.with_path("/api/photo/c").with_query(f"chunked=1&size={LARGE}{named}")
    for x_cache in ("MISS", "HIT"):
        status, received, body = await fetch(client, url)
        assert (status, received["x-cache"], len(body)) == (200, [x_cache], LARGE)
        app_said(received, server)
    status, received, body = await fetch(client, url.with_path("/elsewhere").with_query(url.query))
    assert (status, received["x-cache"], len(body)) == (200, ["BYPASS"], LARGE)
    app_said(received, server)
    # The app's own 304, relayed on a pass-through and to a conditional miss.
    for path, x_cache in (("/elsewhere", "BYPASS"), ("/api/photo/n", "MISS")):
        url = proxy.url.with_path(path).with_query(f"status=304{named}")
        status, received, _ = await fetch(client, url, **{"If-None-Match": '"a"'})
        assert (status, received["x-cache"]) == (304, [x_cache])
        assert received.get("server") == ([server] if server is not None else None)


async def test_own_answers_name_no_server(
    sidecache: Factory, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(
        [{"name": "photo", "match": "/api/photo/{id}", "ttl": "5m"}],
        upstream_url=raw_upstream.url,
        upstream={"timeout": "0.2s"},
        server={"max_body_bytes": 10},
    )
    async with client.post(proxy.url / "elsewhere", data=b"x" * 100) as r:
        assert r.status == 413
        assert "Server" not in r.headers
    for path in ("/elsewhere", "/api/photo/slow"):
        async with client.get(proxy.url.with_path(path).with_query(gated="1")) as r:
            assert r.status == 504
            assert "Server" not in r.headers
    raw_upstream.gate.set()
