"""Downloads, passed through or filling the cache: a slow client is the client's
problem, a slow app the app's.

Time limits are tiny and every wait is on an event or a counter: nothing here
depends on the machine being fast or slow.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, Running
from tests.integration.upstream_app import ARRIVED, GATE, photo_body

BIG = 50_000_000  # far more than the socket buffers between the proxy and a client


async def until_stats(proxy: Running, name: str, value: int) -> None:
    """Wait (bounded) until the /stats upstream counter ``name`` reaches ``value``."""
    async with asyncio.timeout(20):
        while proxy.runtime.snapshot()["upstream"][name] != value:  # type: ignore[index]  # noqa: ASYNC110
            await asyncio.sleep(0)


async def stalled_download(proxy: Running, path: str = "/files/1") -> asyncio.StreamWriter:
    """A client that asks for a large body and never reads a byte."""
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(f"GET {path}?size={BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return writer


async def test_a_download_making_progress_outlives_upstream_timeout(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([], upstream={"timeout": "1s", "read_timeout": "60s"})
    async with client.get(proxy.url / "stream/1") as r:
        assert r.status == 200
        assert await r.content.readexactly(12) == b"first-chunk;"
        # A request sent after this one has already run out of upstream.timeout:
        # this download is past it too.
        async with client.get(proxy.url / "hang") as late:
            assert late.status == 504
        upstream.app[GATE].set()
        assert await r.content.read() == b"the-rest"  # complete, not cut
    stats = proxy.runtime.snapshot()["upstream"]
    assert stats["errors"] == 1 and stats["slow_clients"] == 0  # type: ignore[index]  # the hang


async def test_a_client_that_takes_nothing_is_cut_at_send_timeout_and_counted_as_slow(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache([], server={"send_timeout": "200ms"})
    writer = await stalled_download(proxy)
    await until_stats(proxy, "slow_clients", 1)
    await until_stats(proxy, "in_flight", 0)  # its upstream slot is free again
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]
    writer.close()


async def test_a_download_is_cut_at_stream_timeout_and_counted_as_a_slow_client(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache(
        [], upstream={"stream_timeout": "300ms"}, server={"send_timeout": "60s"}
    )
    writer = await stalled_download(proxy)
    await until_stats(proxy, "slow_clients", 1)
    await until_stats(proxy, "in_flight", 0)
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]
    writer.close()


async def test_an_app_that_trickles_past_stream_timeout_is_an_upstream_error(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([], upstream={"stream_timeout": "300ms", "read_timeout": "60s"})
    async with client.get(proxy.url / "stream/1") as r:
        assert await r.content.readexactly(12) == b"first-chunk;"
        # The app holds the rest back: the proxy waits on it, not on the client.
        try:
            await r.content.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a cut body passed for a complete one")
    stats = proxy.runtime.snapshot()["upstream"]
    assert stats["errors"] == 1 and stats["slow_clients"] == 0  # type: ignore[index]
    upstream.app[GATE].set()


# A cacheable route whose response turns out too large to store: the cache fill
# streams it to the client who asked, and the same limits apply as to pass-through.
TOO_LARGE = {"max_object_bytes": "1MiB"}


async def test_a_fill_too_large_to_store_outlives_upstream_timeout_while_its_client_reads(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream={"timeout": "1s"}, cache=TOO_LARGE)
    async with client.get(proxy.url / "api/photo/7" % {"size": str(BIG)}) as r:
        assert r.status == 200 and r.headers["X-Cache"] == "MISS"
        first = await r.content.readexactly(1000)
        # The client pauses: a request sent after this one has already run out of
        # upstream.timeout, so this download is past it too.
        async with client.get(proxy.url / "hang") as late:
            assert late.status == 504
        rest = await r.content.read()  # complete, not cut
    assert first + rest == photo_body("7", BIG)
    stats = proxy.runtime.snapshot()["upstream"]
    assert stats["errors"] == 1 and stats["slow_clients"] == 0  # type: ignore[index]  # the hang


async def test_a_fill_whose_client_takes_nothing_is_cut_at_send_timeout_as_a_slow_client(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache(
        upstream={"timeout": "60s"}, server={"send_timeout": "200ms"}, cache=TOO_LARGE
    )
    writer = await stalled_download(proxy, "/api/photo/8")
    await until_stats(proxy, "slow_clients", 1)
    await until_stats(proxy, "in_flight", 0)  # the fill let its upstream slot go
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]
    assert not proxy.runtime.coalescer.in_progress()
    writer.close()


async def test_a_fill_waiting_on_its_client_frees_its_slot_at_stream_timeout(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache(
        upstream={"timeout": "60s", "stream_timeout": "200ms"},
        server={"send_timeout": "60s"},
        cache=TOO_LARGE,
    )
    writer = await stalled_download(proxy, "/api/photo/9")
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()  # the fill holds its slot from here
    await until_stats(proxy, "in_flight", 0)
    # The fill waited on the client, not on the app.
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]
    writer.close()


async def test_a_fill_whose_app_goes_silent_mid_body_is_an_upstream_error(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(
        [{"name": "stream", "match": "/stream/{id}", "ttl": "5m"}],
        upstream={"read_timeout": "200ms"},
        cache={"max_object_bytes": 5},
    )
    async with client.get(proxy.url / "stream/1") as r:
        assert r.headers["X-Cache"] == "MISS"
        assert await r.content.readexactly(12) == b"first-chunk;"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.content.read()  # aborted, never a short body that looks complete
    stats = proxy.runtime.snapshot()["upstream"]
    assert stats["errors"] == 1 and stats["slow_clients"] == 0  # type: ignore[index]
    upstream.app[GATE].set()


async def test_a_stored_fill_does_not_wait_for_a_stalled_first_client(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    size = 8_000_000  # storable, and more than the socket buffers hold
    proxy = await sidecache(server={"send_timeout": "200ms"})
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(f"GET /gated/photo/3?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    follower = asyncio.create_task(
        client.get(proxy.url / "gated/photo/3" % {"size": str(size)}, headers={"Host": "x"})
    )
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(1)
    upstream.app[GATE].set()
    async with await follower as r:
        assert r.headers["X-Cache"] == "HIT"
        assert await r.read() == photo_body("3", size)
    await until_stats(proxy, "slow_clients", 1)  # the first client, cut
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]
    writer.close()
