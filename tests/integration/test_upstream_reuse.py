"""Reusing upstream connections (proxy/reuse.py, proxy/upstream.py): a pooled
connection is not reused past the app's ``Keep-Alive`` hint nor
``upstream.keepalive_timeout``.

The upstream here is written on raw asyncio streams and numbers its
connections, so that reuse is seen from the app's side.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import Clock, Factory, Running

ROUTES = [{"name": "cached", "match": "/cached/{id}", "ttl": "5m"}]
# The pool's own idle time out of the way: the test decides when a connection is
# stale, by the app closing it or by the injected clock.
LONG_IDLE = {"keepalive_timeout": "1h"}


@dataclass(frozen=True)
class Seen:
    connection: int
    method: str
    path: str
    body: int


@dataclass
class ReuseUpstream:
    """Answers ``METHOD body-size`` to each request, with ``keep_alive`` as its
    ``Keep-Alive`` header if set. With ``close_second``, a connection whose first
    request was answered is closed, unanswered, as soon as the head of a second
    request arrives on it. With ``together``, first requests are answered only once
    that many connections are open (so that the pool holds that many)."""

    close_second: bool = False
    keep_alive: str | None = None
    together: int = 0
    port: int = 0
    connections: int = 0
    answered: list[Seen] = field(default_factory=list)
    dropped: list[Seen] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        if number >= self.together:
            self.opened.set()
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = head.decode("latin-1").split(" ", 2)[:2]
                if self.close_second and served:
                    self.dropped.append(Seen(number, method, path, -1))
                    return  # closed with the body unread, if any: a reset
                body = await read_body(reader, head)
                await self.opened.wait()
                self.answered.append(Seen(number, method, path, len(body)))
                served += 1
                text = f"{method} {len(body)}".encode()
                lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(text)}"]
                if self.keep_alive is not None:
                    lines.append(f"Keep-Alive: {self.keep_alive}")
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + text)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (
            line.partition(b":") for line in head.split(b"\r\n")[1:] if b":" in line
        )
    }
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    return await reader.readexactly(int(fields.get(b"content-length", b"0")))


@pytest.fixture
async def reuse_upstream() -> AsyncIterator[ReuseUpstream]:
    upstream = ReuseUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    yield upstream
    server.close()
    await server.wait_closed()


async def send(
    client: aiohttp.ClientSession, proxy: Running, method: str, path: str, body: Any = None
) -> tuple[int, str, str]:
    async with client.request(method, proxy.url.with_path(path), data=body) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.text()


async def connections_of(
    client: aiohttp.ClientSession,
    proxy: Running,
    upstream: ReuseUpstream,
    clock: Clock,
    *waits: float,
) -> list[int]:
    """The app's connection numbers for a request, then one after each idle wait."""
    for n, wait in enumerate((0.0, *waits)):
        clock.now += wait
        assert await send(client, proxy, "GET", f"/r{n}") == (200, "BYPASS", "GET 0")
    return [seen.connection for seen in upstream.answered]


async def test_a_connection_is_not_reused_past_the_apps_keep_alive_hint(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession
) -> None:
    reuse_upstream.keep_alive = "timeout=1"
    clock = Clock()
    proxy = await sidecache(
        ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE, clock=clock
    )
    # timeout=1: kept half a second (proxy.reuse.idle_budget), from each release.
    assert await connections_of(client, proxy, reuse_upstream, clock, 0.4, 0.4, 0.5) == [
        1,
        1,
        1,
        2,
    ]


async def test_a_connection_is_not_reused_past_keepalive_timeout(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(
        ROUTES, upstream_url=reuse_upstream.url, upstream={"keepalive_timeout": "4s"}, clock=clock
    )
    assert await connections_of(client, proxy, reuse_upstream, clock, 3.9, 4.0) == [1, 1, 2]


async def test_a_connection_is_not_kept_when_the_app_says_timeout_0(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession
) -> None:
    reuse_upstream.keep_alive = "timeout=0"
    clock = Clock()
    proxy = await sidecache(
        ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE, clock=clock
    )
    assert await connections_of(client, proxy, reuse_upstream, clock, 0.0, 0.0) == [1, 2, 3]
