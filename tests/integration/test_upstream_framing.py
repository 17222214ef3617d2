"""Apps that break HTTP framing.

The upstream is written on raw asyncio streams: a framework would not send more
body than its ``Content-Length``. Its behaviour
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
