"""Pass-through downloads: a slow client is the client's problem, a slow app the app's.

Time limits are tiny and every wait is on an event or a counter: nothing here
depends on the machine being fast or slow.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, Running
from tests.integration.upstream_app import GATE

BIG = 50_000_000  # far more than the socket buffers between the proxy and a client


async def until_stats(proxy: Running, name: str, value: int) -> None:
    """Wait (bounded) until the /stats upstream counter ``name`` reaches ``value``."""
    async with asyncio.timeout(20):
        while proxy.runtime.snapshot()["upstream"][name] != value:  # type: ignore[index]  # noqa: ASYNC110
            await asyncio.sleep(0)


async def stalled_download(proxy: Running) -> asyncio.StreamWriter:
    """A client that asks for a large pass-through body and never reads a byte."""
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(f"GET /files/1?size={BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
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
