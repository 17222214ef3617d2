"""Apps that break HTTP framing, and apps that send interim (1xx) responses.

The upstream is written on raw asyncio streams: a framework would not send more
body than its ``Content-Length``, nor a ``103`` before its answer. Its behaviour
is named by the last path segment; ``/c/...`` is a cacheable route, anything
else passes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.integration.conftest import AccessLines, Factory, Running

ROUTES = [{"name": "c", "match": "/c/{kind}", "ttl": "1m"}]
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
LONG = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n0123456789"


@dataclass
class RawApp:
    """Answers each request as its last path segment says; records which
    connection (numbered from 1) each request arrived on."""

    port: int = 0
    seen: list[tuple[int, str]] = field(default_factory=list)
    connections: int = 0
    # ``late``: set by the test to send the excess; set here once the proxy has
    # closed that connection.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connections_of(self, kind: str) -> list[int]:
        return [conn for conn, line in self.seen if line.split(" ")[1].rsplit("/", 1)[1] == kind]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                self.seen.append((conn, line))
                method, target = line.split(" ")[:2]
                kind = target.partition("?")[0].rsplit("/", 1)[1]
                if not await self.answer(kind, method, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(
        self, kind: str, method: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        match kind:
            case "long":  # ten bytes for a declared five, in one write
                writer.write(LONG)
            case "late":  # the excess comes later, once the connection is idle
                writer.write(LONG[:-5])
                await writer.drain()
                await self.release.wait()
                writer.write(b"56789")
                await writer.drain()
                if not await reader.read(1):  # the proxy closed the connection
                    self.dropped.set()
                return False
            case "chunkedlong":  # bytes after the last chunk, in the same write
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\n01234\r\n0\r\n\r\n56789"
                )
            case "headbody":  # a body after the head of a HEAD answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n01234")
            case "nocontent":  # a body after a 204
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n01234")
            case "hints":
                writer.write(HINTS)
                await writer.drain()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            case "twohints":  # two interim responses and the answer, in one write
                writer.write(HINTS + HINTS.replace(b"style", b"app") + LONG[:-5])
            case "continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            case _:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfine!")
        await writer.drain()
        return True


@pytest.fixture
async def app() -> AsyncIterator[RawApp]:
    raw = RawApp()
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    yield raw
    server.close()
    await server.wait_closed()


async def get(
    client: aiohttp.ClientSession, proxy: Running, path: str, method: str = "GET"
) -> tuple[int, str, bytes]:
    async with client.request(method, proxy.url.with_path(path)) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.read()


def excess_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "proxy.upstream" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(("prefix", "x_cache"), [("/c", "MISS"), ("/p", "BYPASS")])
async def test_a_body_longer_than_its_content_length_is_served_as_declared(
    sidecache: Factory,
    app: RawApp,
    client: aiohttp.ClientSession,
    access: AccessLines,
    caplog: pytest.LogCaptureFixture,
    prefix: str,
    x_cache: str,
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    async with client.get(proxy.url.with_path(f"{prefix}/long").with_query(token="s3cr3t")) as r:
        assert (r.status, r.headers["X-Cache"], await r.read()) == (200, x_cache, b"01234")
    (warning,) = excess_warnings(caplog)
    assert f"GET {prefix}/long" in warning and "Content-Length 5" in warning
    assert "s3cr3t" not in caplog.text
    line = await access.first(lambda line: line["path"] == f"{prefix}/long")
    assert line["bytes"] == 5
    # The excess was not read as the next response: that connection is gone.
    assert await get(client, proxy, f"{prefix}/ok") == (200, x_cache, b"fine!")
    assert app.connections_of("long") != app.connections_of("ok")


async def test_the_declared_body_of_a_response_that_ran_over_is_stored(
    sidecache: Factory, app: RawApp, client: aiohttp.ClientSession
) -> None:
    # As nginx does: the response is complete at its Content-Length; what follows
    # is a fault of the connection, not part of this response.
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    assert await get(client, proxy, "/c/long") == (200, "MISS", b"01234")
    assert await get(client, proxy, "/c/long") == (200, "HIT", b"01234")
    assert len(app.connections_of("long")) == 1


async def test_bytes_after_the_last_chunk_leave_the_response_whole(
    sidecache: Factory, app: RawApp, client: aiohttp.ClientSession
) -> None:
    # Not checked here (aiohttp's parser refuses them, and closes the connection),
    # but the head reaches the parser alone, so the response is delivered first.
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    assert await get(client, proxy, "/c/chunkedlong") == (200, "MISS", b"01234")
    assert await get(client, proxy, "/c/chunkedlong") == (200, "HIT", b"01234")
    assert await get(client, proxy, "/c/ok") == (200, "MISS", b"fine!")
    assert app.connections_of("chunkedlong") != app.connections_of("ok")


async def test_excess_sent_once_the_connection_is_idle_drops_it(
    sidecache: Factory,
    app: RawApp,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    assert await get(client, proxy, "/p/late") == (200, "BYPASS", b"01234")
    app.release.set()
    async with asyncio.timeout(10):
        await app.dropped.wait()
    (warning,) = excess_warnings(caplog)
    assert "GET /p/late" in warning
    assert await get(client, proxy, "/p/ok") == (200, "BYPASS", b"fine!")
    assert app.connections_of("late") != app.connections_of("ok")


@pytest.mark.parametrize(
    ("method", "kind", "status", "end"),
    [("HEAD", "headbody", 200, "a HEAD request"), ("GET", "nocontent", 204, "status 204")],
)
async def test_a_body_where_there_is_none_is_dropped_with_the_connection(
    sidecache: Factory,
    app: RawApp,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    method: str,
    kind: str,
    status: int,
    end: str,
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    assert await get(client, proxy, f"/p/{kind}", method) == (status, "BYPASS", b"")
    (warning,) = excess_warnings(caplog)
    assert f"({end}) to {method} /p/{kind}" in warning
    assert await get(client, proxy, "/p/ok") == (200, "BYPASS", b"fine!")
    assert app.connections_of(kind) != app.connections_of("ok")


async def raw_request(proxy: Running, path: str, version: str = "1.1") -> list[bytes]:
    """One request on a fresh connection: the heads received, interim ones first,
    the final head's body appended to it."""
    reader, writer = await asyncio.open_connection(proxy.url.host, proxy.url.port)
    try:
        host = f"{proxy.url.host}:{proxy.url.port}"
        writer.write(f"GET {path} HTTP/{version}\r\nHost: {host}\r\n\r\n".encode())
        heads: list[bytes] = []
        async with asyncio.timeout(10):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                if not head.startswith(b"HTTP/1.1 1"):
                    break
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            heads[-1] += await reader.readexactly(length)
        return heads
    finally:
        writer.close()


@pytest.mark.parametrize(("prefix", "x_cache"), [("/c", "MISS"), ("/p", "BYPASS")])
async def test_early_hints_reach_the_client_before_the_answer(
    sidecache: Factory, app: RawApp, access: AccessLines, prefix: str, x_cache: str
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    hints, final = await raw_request(proxy, f"{prefix}/hints")
    assert hints.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"\r\nLink: </style.css>; rel=preload\r\n" in hints
    assert b"\r\nVia: 1.1 sidecache\r\n" in hints
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"\r\nX-Cache: {x_cache}\r\n".encode() in final and final.endswith(b"\r\n\r\nhello")
    line = await access.first(lambda line: line["path"] == f"{prefix}/hints")
    assert line["bytes"] == 5  # the body only


async def test_interim_responses_are_never_stored(sidecache: Factory, app: RawApp) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    first, second, final = await raw_request(proxy, "/c/twohints")
    assert b"</style.css>" in first and b"</app.css>" in second
    assert b"\r\nX-Cache: MISS\r\n" in final and final.endswith(b"\r\n\r\n01234")
    (hit,) = await raw_request(proxy, "/c/twohints")
    assert hit.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nX-Cache: HIT\r\n" in hit
    assert hit.endswith(b"\r\n\r\n01234")


async def test_no_interim_response_for_an_http10_client_nor_the_apps_100_continue(
    sidecache: Factory, app: RawApp
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=app.url)
    (final,) = await raw_request(proxy, "/p/hints", version="1.0")
    assert final.startswith(b"HTTP/1.0 200 OK\r\n") and final.endswith(b"\r\n\r\nhello")
    (final,) = await raw_request(proxy, "/p/continue")
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and final.endswith(b"\r\n\r\nhello")
