"""Reusing upstream connections (proxy/reuse.py, proxy/upstream.py): a request on
a pooled connection the app has just closed is sent again on a new one when it
can be, and a pooled connection is not reused past the app's ``Keep-Alive`` hint
nor ``upstream.keepalive_timeout``.

The upstream here is written on raw asyncio streams, so that it can close a
connection at the exact moment a request arrives on it, without answering: the
deterministic form of an app's idle timeout firing as a pooled connection is
reused. It numbers its connections, so that reuse is seen from the app's side.
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
SMALL = b"s" * 1000
LARGE = 256 * 1024


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


async def retries(client: aiohttp.ClientSession, proxy: Running) -> tuple[int, int]:
    """``upstream.retries`` of /stats and ``sidecache_upstream_retries_total``."""
    async with client.get(proxy.control / "stats") as r:
        stats = await r.json()
    async with client.get(proxy.control / "metrics") as r:
        text = await r.text()
    metric = [x for x in text.splitlines() if x.startswith("sidecache_upstream_retries_total ")]
    return stats["upstream"].get("retries", -1), int(float(metric[0].split()[1])) if metric else -1


async def chunks() -> AsyncIterator[bytes]:
    for _ in range(LARGE // 16384):
        yield b"c" * 16384


@pytest.mark.parametrize(
    ("method", "path", "body", "x_cache"),
    [
        ("GET", "/cached/1", None, "MISS"),  # a cache fill
        ("GET", "/elsewhere", None, "BYPASS"),
        ("HEAD", "/elsewhere", None, "BYPASS"),
        ("DELETE", "/cached/1", None, "BYPASS"),
        ("PUT", "/cached/1", None, "BYPASS"),
        ("PUT", "/cached/1", SMALL, "BYPASS"),
        ("POST", "/cached/1", SMALL, "BYPASS"),
        ("POST", "/cached/1", None, "BYPASS"),
        ("POST", "/elsewhere", b"p" * (64 * 1024), "BYPASS"),  # the largest kept
    ],
)
async def test_a_request_on_a_connection_the_app_closed_is_sent_again(
    sidecache: Factory,
    reuse_upstream: ReuseUpstream,
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    body: bytes | None,
    x_cache: str,
) -> None:
    reuse_upstream.close_second = True
    proxy = await sidecache(ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE)
    assert await send(client, proxy, "GET", "/warm") == (200, "BYPASS", "GET 0")
    size = len(body or b"")
    status, cache, text = await send(client, proxy, method, path, body)
    # The app's answer, from a second connection, and the request handled once.
    assert (status, cache) == (200, x_cache)
    assert text == ("" if method == "HEAD" else f"{method} {size}")
    assert reuse_upstream.dropped == [Seen(1, method, path, -1)]
    assert reuse_upstream.answered[1:] == [Seen(2, method, path, size)]
    assert await retries(client, proxy) == (1, 1)


@pytest.mark.parametrize("kind", ["chunked", "over-64KiB"])
async def test_a_streamed_body_is_not_sent_again(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession, kind: str
) -> None:
    body = chunks() if kind == "chunked" else b"q" * (64 * 1024 + 1)
    reuse_upstream.close_second = True
    proxy = await sidecache(ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE)
    assert await send(client, proxy, "GET", "/warm") == (200, "BYPASS", "GET 0")
    status, cache, _ = await send(client, proxy, "POST", "/elsewhere", body)
    # Part of the body is gone to the closed connection: the honest answer is 502.
    assert (status, cache) == (502, "BYPASS")
    assert [seen.method for seen in reuse_upstream.answered] == ["GET"]
    assert await retries(client, proxy) == (0, 0)
    # The next request has a connection of its own again, and gets its answer.
    assert await send(client, proxy, "GET", "/after") == (200, "BYPASS", "GET 0")


async def test_a_request_that_fails_on_a_new_connection_is_not_sent_again(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession
) -> None:
    reuse_upstream.close_second = True
    proxy = await sidecache(ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE)
    await send(client, proxy, "GET", "/warm")
    # The retry also lands on a connection that the app then closes: one retry only.
    assert await send(client, proxy, "GET", "/again") == (200, "BYPASS", "GET 0")
    assert await send(client, proxy, "GET", "/again") == (200, "BYPASS", "GET 0")
    assert [s.connection for s in reuse_upstream.answered] == [1, 2, 3]
    assert await retries(client, proxy) == (2, 2)


async def test_the_retry_takes_a_new_connection_not_another_pooled_one(
    sidecache: Factory, reuse_upstream: ReuseUpstream, client: aiohttp.ClientSession
) -> None:
    reuse_upstream.close_second = True
    reuse_upstream.together = 2
    proxy = await sidecache(ROUTES, upstream_url=reuse_upstream.url, upstream=LONG_IDLE)
    warm = await asyncio.gather(send(client, proxy, "GET", "/a"), send(client, proxy, "GET", "/b"))
    assert warm == [(200, "BYPASS", "GET 0")] * 2
    # Both pooled connections are closed by the app on their next request: the
    # retry must not take the other one.
    assert await send(client, proxy, "POST", "/c", SMALL) == (200, "BYPASS", "POST 1000")
    assert len(reuse_upstream.dropped) == 1
    assert reuse_upstream.answered[-1] == Seen(3, "POST", "/c", len(SMALL))
    assert await retries(client, proxy) == (1, 1)


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
