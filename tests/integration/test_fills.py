"""Fills in progress against purges: nothing a purge removed is served afterwards."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.fill import STREAM_WINDOW
from proxy.keys import loose_path
from tests.integration.conftest import Factory, Running
from tests.integration.upstream_app import ARRIVED, GATE, HITS

ROUTES = [{"name": "versioned", "match": "/versioned/{id}", "ttl": "5m"}]


async def _waiters(proxy: Running, count: int) -> None:
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(count)


async def _purge(client: aiohttp.ClientSession, proxy: Running, how: str) -> None:
    if how == "delete":  # a successful unsafe request drops its path, like a purge
        async with client.delete(proxy.url / "versioned/1") as r:
            assert r.status == 204
        return
    body = {"path": {"path": "/versioned/1"}, "route": {"route": "versioned"}}.get(
        how, {"all": True}
    )
    async with client.post(proxy.control / "purge", json=body) as r:
        assert r.status == 200


@pytest.mark.parametrize("how", ["path", "route", "all", "delete"])
async def test_a_request_after_a_purge_does_not_join_the_fill_that_began_before_it(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, how: str
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.url / "versioned/1"

    async def get() -> tuple[str, str, bytes]:
        async with client.get(url) as r:
            assert r.status == 200
            return r.headers["X-Cache"], r.headers["Cache-Status"], await r.read()

    leader = asyncio.create_task(get())
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()  # the first fill is held open upstream
    early = asyncio.create_task(get())
    await _waiters(proxy, 1)
    await _purge(client, proxy, how)

    # Arrived after the purge: a new upstream request, the new body. (Joining the
    # old fill would wait for the gate, still closed.)
    async with asyncio.timeout(10):
        cache, _, body = await get()
    assert (cache, body) == ("MISS", b"/versioned/1 version 2")

    upstream.app[GATE].set()
    async with asyncio.timeout(10):
        cache, _, body = await leader
        assert (cache, body) == ("MISS", b"/versioned/1 version 1")
        cache, status, body = await early  # already waiting: it may have the old fill
    assert (cache, body) == ("HIT", b"/versioned/1 version 1")
    assert "detail=coalesced" in status
    # The old fill, finished last, did not overwrite what the new one stored.
    cache, _, body = await get()
    assert (cache, body) == ("HIT", b"/versioned/1 version 2")
    assert upstream.app[HITS]["GET /versioned/1"] == 2
    assert len(proxy.runtime.coalescer) == 0


def _neighbour(path: str) -> str:
    """Another path of the route whose hash falls in the same one of 4096 buckets
    as ``path``'s: purges counted per bucket would take its purge for one of
    ``path``. The proxy runs in this process: its hashes are the same."""
    slot = hash(loose_path(path)) % 4096
    return next(
        other
        for i in range(2, 1_000_000)
        if hash(loose_path(other := f"/versioned/{i}")) % 4096 == slot
    )


@pytest.mark.parametrize("how", ["delete", "path"])
async def test_a_purge_of_another_path_does_not_keep_a_running_fill_out(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, how: str
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.url / "versioned/1"

    async def get() -> tuple[str, bytes]:
        async with client.get(url) as r:
            assert r.status == 200
            return r.headers["X-Cache"], await r.read()

    leader = asyncio.create_task(get())
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()  # the fill is held open upstream
    other = _neighbour("/versioned/1")
    if how == "delete":
        async with client.delete(proxy.url.with_path(other)) as r:
            assert r.status == 204
    else:
        async with client.post(proxy.control / "purge", json={"path": other}) as r:
            assert r.status == 200
    upstream.app[GATE].set()
    async with asyncio.timeout(10):
        assert await leader == ("MISS", b"/versioned/1 version 1")
        # Stored: the purge was of another path.
        assert await get() == ("HIT", b"/versioned/1 version 1")
    assert upstream.app[HITS]["GET /versioned/1"] == 1


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ({}, True),
        # Chunked, so its size is learnt only as it streams: over max_object_bytes.
        ({"chunked": "1", "size": "300000"}, False),
    ],
)
async def test_a_miss_does_not_claim_stored_before_the_body_is_known(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    query: dict[str, str],
    stored: bool,
) -> None:
    proxy = await sidecache(cache={"max_object_bytes": "100KiB"})
    url = (proxy.url / "api/photo/5").with_query(query)
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
        # RFC 9211 "stored" means stored: unknown while the body streams.
        assert r.headers["Cache-Status"] == "sidecache; fwd=uri-miss; fwd-status=200"
        await r.read()
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == ("HIT" if stored else "MISS")
        await r.read()


async def _stalled_reader(proxy: Running, target: str) -> asyncio.StreamWriter:
    """A client that sends its request, reads the head, then reads nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (proxy.url.host, proxy.url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    async with asyncio.timeout(10):
        assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
    return writer


async def test_a_client_that_does_not_read_holds_at_most_the_window(
    sidecache: Factory,
) -> None:
    # Chunked: the body might be storable until its end, so it is kept as it comes;
    # the client's backlog must not grow with it, and the upstream read must wait.
    size = 8 * 1024 * 1024
    proxy = await sidecache()
    writer = await _stalled_reader(proxy, f"/api/photo/6?chunked=1&size={size}")
    (fill,) = proxy.runtime.coalescer.in_progress()
    async with asyncio.timeout(10):
        await fill.relay.stalled.wait()
    assert fill.relay.unread <= 2 * STREAM_WINDOW  # the window, plus one chunk at most
    assert fill.relay.size < size  # the upstream read waits for the client
    writer.transport.abort()


async def test_bodies_of_unknown_length_keep_at_most_the_budget_together(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(cache={"max_bytes": "16MiB", "max_object_bytes": "16MiB"})
    # A first chunked body, held by a client that does not read: its fill keeps
    # more than the window (what that client has not read yet, at least).
    first = await _stalled_reader(proxy, f"/api/photo/7?chunked=1&size={24 * 1024 * 1024}")
    (held,) = proxy.runtime.coalescer.in_progress()
    async with asyncio.timeout(10):
        await held.relay.stalled.wait()
    assert held.relay.keeping and held.relay.size > STREAM_WINDOW
    # A second one, storable on its own, would take both past cache.max_bytes:
    # it is served whole, and not kept.
    size = 15 * 1024 * 1024
    url = (proxy.url / "api/photo/8").with_query(chunked="1", size=str(size))
    async with client.get(url) as r:
        assert len(await r.read()) == size
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
        await r.read()
    first.transport.abort()
    async with asyncio.timeout(10):
        await held.result  # the first fill ends, and gives its allowance back
    assert proxy.runtime.coalescer.allowance.used == 0
    for expected in ("MISS", "HIT"):  # alone, the second one is stored
        async with client.get(url) as r:
            assert r.headers["X-Cache"] == expected
            assert len(await r.read()) == size
