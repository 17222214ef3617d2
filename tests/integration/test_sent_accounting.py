"""The access log and the latency histograms count what was sent, when it was sent."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import AccessLines, Factory, Running
from tests.integration.upstream_app import ARRIVED, GATE


def _hit_count(proxy: Running) -> int:
    return proxy.runtime.stats.latency["HIT"].count


async def test_a_large_hit_is_logged_with_its_bytes_once_sent(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache()
    url = (proxy.url / "api/photo/1").with_query(size="300000")  # over 128 KiB: sliced
    for _ in range(2):
        async with client.get(url) as r:
            assert len(await r.read()) == 300_000
    hit = await access.first(lambda line: line["cache"] == "HIT")
    assert hit["bytes"] == 300_000
    assert _hit_count(proxy) == 1
    async with client.get(proxy.control / "metrics") as r:
        assert 'sidecache_response_seconds_count{cache_status="HIT"} 1.0' in await r.text()


async def test_a_hit_the_client_does_not_read_is_neither_timed_nor_logged_before_it_ends(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    size = 24 * 1024 * 1024  # far more than the socket buffers can hold
    proxy = await sidecache(cache={"max_object_bytes": "32MiB"})
    path = f"/api/photo/2?size={size}"
    async with client.get(proxy.url.with_path("/api/photo/2").with_query(size=size)) as r:
        assert len(await r.read()) == size  # the MISS that stores it
    await access.first(lambda line: line["cache"] == "MISS")

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (proxy.url.host, proxy.url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    host = f"{proxy.url.host}:{proxy.url.port}"  # the host the MISS was keyed on
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    assert b"X-Cache: HIT" in head
    # The head is out, the body is not: nothing measured or logged yet.
    assert _hit_count(proxy) == 0
    assert not [line for line in access.lines if line["cache"] == "HIT"]

    writer.transport.abort()  # the client goes away mid-body
    hit = await access.first(lambda line: line["cache"] == "HIT")
    assert 0 < hit["bytes"] < size  # what was written, not the Content-Length
    assert _hit_count(proxy) == 1


async def test_a_response_cut_short_upstream_is_logged_with_the_bytes_sent(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    # The upstream promises 100,000 bytes, sends 50,000 and closes.
    proxy = await sidecache([{"name": "t", "match": "/truncated", "ttl": "5m"}])
    async with client.get(proxy.url / "truncated") as r:
        assert r.headers["Content-Length"] == "100000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    line = await access.first(lambda line: line["path"] == "/truncated")
    assert (line["cache"], line["bytes"]) == ("MISS", 50_000)


@pytest.mark.parametrize("cached", [False, True], ids=["pass-through", "fill"])
async def test_a_stream_cut_at_shutdown_is_logged_with_the_bytes_sent(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    access: AccessLines,
    upstream: TestServer,
    cached: bool,
) -> None:
    # A cacheable route's fill of a chunked body streams to its first client as
    # it arrives, like a pass-through response.
    routes = [{"name": "s", "match": "/stream/{id}", "ttl": "5m"}] if cached else None
    proxy = await sidecache(routes)
    async with client.get(proxy.url / "stream/1") as r:
        assert r.headers["X-Cache"] == ("MISS" if cached else "BYPASS")
        assert await r.content.readexactly(12) == b"first-chunk;"
        await proxy.instance.stop(grace=0.1)  # the app never finishes: cut
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.content.read()
    line = await access.first(lambda line: line["path"] == "/stream/1")
    assert (line["status"], line["bytes"]) == (200, 12)
    upstream.app[GATE].set()


async def test_a_client_gone_before_the_head_leaves_no_error(
    sidecache: Factory,
    access: AccessLines,
    upstream: TestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await sidecache()
    _, writer = await asyncio.open_connection(proxy.url.host, proxy.url.port)
    host = f"{proxy.url.host}:{proxy.url.port}"
    writer.write(f"GET /gated/photo/5 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await upstream.app[ARRIVED].wait()  # the fill waits at the app
    writer.transport.abort()  # the client leaves before the head
    upstream.app[GATE].set()
    line = await access.first(lambda line: line["path"] == "/gated/photo/5")
    assert (line["cache"], line["bytes"]) == ("MISS", 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# (method, path and query, request headers, what the client receives as body).
KINDS: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", "/api/photo/1?size=1000", {}, 1000),  # MISS, Content-Length
    ("GET", "/api/photo/1?size=1000", {}, 1000),  # HIT, one write
    ("GET", "/api/photo/2?size=300000", {}, 300_000),  # MISS
    ("GET", "/api/photo/2?size=300000", {}, 300_000),  # HIT, written in slices
    ("GET", "/api/photo/2?size=300000", {"Range": "bytes=0-99"}, 100),  # 206 from the entry
    ("GET", "/api/photo/3?size=10000&chunked=1", {}, 10_000),  # MISS, chunked from the app
    ("GET", "/api/photo/3?size=10000&chunked=1", {}, 10_000),  # HIT of it
    ("GET", "/files/1?size=10000&chunked=1", {}, 10_000),  # pass-through, chunked
    ("GET", "/files/2?size=10000", {}, 10_000),  # pass-through, Content-Length
    ("GET", "/nowhere", {}, len("404: Not Found")),  # the app's 404, passed through
    ("HEAD", "/api/photo/1?size=1000", {}, 0),  # HEAD, HIT
    ("HEAD", "/api/photo/4?size=1000", {}, 0),  # HEAD, MISS
    ("HEAD", "/files/2?size=10000", {}, 0),  # HEAD, pass-through
    ("GET", "/api/photo/1?size=1000", {"If-None-Match": "*"}, 0),  # 304 from the entry
    ("GET", "/files/4?status=304", {}, 0),  # the app's 304, passed through
]


async def test_bytes_is_the_body_the_client_received_for_every_kind_of_response(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache()
    for index, (method, target, headers, size) in enumerate(KINDS):
        path, _, query = target.partition("?")
        async with client.request(
            method, proxy.url.with_path(path).with_query(query), headers=headers
        ) as r:
            received = len(await r.read())
        # Logged once the body is out, which may be just after the client has it.
        await access.first(lambda line, index=index: len(access.lines) > index)
        line = access.lines[index]
        assert (line["method"], line["path"]) == (method, path)
        assert (received, line["bytes"]) == (size, size), (target, line["cache"])
