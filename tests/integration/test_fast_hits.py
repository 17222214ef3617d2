"""Plain hits answered by the public port's protocol as they are parsed (``guard.py``,
``Proxy.fast_hit``): the same bytes, counters and log lines as any other answer,
in order with the requests around them, under the same limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.guard import GuardedRequestHandler
from tests.integration.conftest import AccessLines, Factory, Running
from tests.integration.upstream_app import HITS, photo_body

# Every test here runs on uvloop, as ``sidecache serve`` does (``run_loop``); the
# rest of the suite runs on asyncio's loop, where large hits take the handler's
# path (``guard._references_writes``).
pytestmark = pytest.mark.uvloop


class Wire:
    """A raw HTTP/1.1 connection: requests written as bytes, answers read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, proxy: Running) -> Wire:
        reader, writer = await asyncio.open_connection(proxy.url.host, proxy.url.port)
        return cls(reader, writer)

    @classmethod
    async def open_slow(cls, proxy: Running) -> Wire:
        """A connection whose receive buffer holds 4 KiB: large bodies wait on it."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (proxy.url.host, proxy.url.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        return cls(reader, writer)

    @classmethod
    async def held_hit(cls, proxy: Running, target: str, size: int) -> tuple[Wire, bytes]:
        """``target`` (a body of ``size`` bytes) stored by a MISS, then asked for on a
        slow connection (``open_slow``): that connection, once the hit's head is in."""
        filler = await cls.open(proxy)
        filler.send(get(target))
        _, headers, body = await filler.answer()  # the MISS that stores it
        assert headers["x-cache"] == "MISS" and len(body) == size
        filler.close()
        wire = await cls.open_slow(proxy)
        wire.send(get(target))
        async with asyncio.timeout(10):
            head = await wire.reader.readuntil(b"\r\n\r\n")
        return wire, head

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))  # pipelined: one write, one packet

    async def answer(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = 0 if head_only else int(headers.get("content-length", "0"))
            body = await self.reader.readexactly(length)
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *extra, "", ""]
    return "\r\n".join(lines).encode()


@pytest.fixture
def answered_in_protocol() -> Iterator[list[str]]:
    """The targets of the requests the protocol answered itself, in order."""
    seen: list[str] = []
    original = GuardedRequestHandler._send

    def spy(self: GuardedRequestHandler, hit: object, method: str, raw: str) -> None:
        seen.append(raw)
        original(self, hit, method, raw)  # type: ignore[arg-type]

    GuardedRequestHandler._send = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        GuardedRequestHandler._send = original  # type: ignore[method-assign]


async def test_pipelined_hits_and_misses_are_answered_in_order(
    sidecache: Factory, upstream: TestServer, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1"), get("/api/photo/2"))
    for photo in ("1", "2"):
        status, headers, body = await wire.answer()
        assert (status, headers["x-cache"]) == (200, "MISS")
        assert body == photo_body(photo, 1000)
    # hit, miss, hit, a pass-through, hit: each answer where its request was.
    wire.send(
        get("/api/photo/1"),
        get("/api/photo/3"),
        get("/api/photo/2"),
        get("/files/9"),
        get("/api/photo/1"),
    )
    expected = [("1", "HIT"), ("3", "MISS"), ("2", "HIT"), ("9", "BYPASS"), ("1", "HIT")]
    for photo, marker in expected:
        status, headers, body = await wire.answer()
        assert (status, headers["x-cache"], body) == (200, marker, photo_body(photo, 1000))
    wire.close()
    # The first hit was answered as parsed; the rest waited their turn behind the miss.
    assert answered_in_protocol == ["/api/photo/1"]
    assert upstream.app[HITS]["GET /api/photo/1"] == 1


async def test_a_protocol_hit_says_what_a_hit_answered_the_usual_way_says(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache(
        [{"name": "p", "match": "/api/photo/{id}", "ttl": "5m", "client_cache_control": "no-cache"}]
    )
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1?cache-control=max-age%3D60"))
    await wire.answer()
    # The same hit, answered through the handler (Connection: close opts out of the
    # protocol's path) and by the protocol.
    wire.send(get("/api/photo/1?cache-control=max-age%3D60"))
    fast = await wire.answer()
    other = await Wire.open(proxy)
    other.send(get("/api/photo/1?cache-control=max-age%3D60", "Connection: close"))
    usual = await other.answer()
    assert answered_in_protocol == ["/api/photo/1?cache-control=max-age%3D60"]
    for answer in (fast, usual):
        assert answer[0] == 200 and answer[2] == photo_body("1", 1000)
        assert answer[1]["cache-control"] == "no-cache"  # the route's, not the app's
        assert answer[1]["x-cache"] == "HIT"
    drop = {"connection", "age", "cache-status", "date"}  # Date: see the next test
    assert {k: v for k, v in fast[1].items() if k not in drop} == {
        k: v for k, v in usual[1].items() if k not in drop
    }
    assert fast[1]["cache-status"].startswith("sidecache; hit; ttl=")
    assert int(fast[1]["age"]) <= int(usual[1]["age"]) + 1
    wire.close()
    other.close()


async def test_an_entry_without_the_app_date_gets_one_per_hit(
    sidecache: Factory, upstream_without_date: str, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache(
        [{"name": "n", "match": "/nodate/{id}", "ttl": "5m"}], upstream_url=upstream_without_date
    )
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/nodate/1"))
        status, headers, body = await wire.answer()
        assert status == 200 and body == b"no date"
        assert headers["date"].endswith(" GMT")
    assert answered_in_protocol == ["/nodate/1"]
    wire.close()


@pytest.fixture
async def upstream_without_date() -> AsyncIterator[str]:
    """An app that sends no Date header (raw bytes: aiohttp's server always adds one)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nno date"
            )
            await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()


async def test_head_hits_carry_the_length_and_no_body(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1?size=5000"))
    await wire.answer()
    # A HEAD then a GET pipelined: the HEAD's answer must not swallow the GET's.
    wire.send(get("/api/photo/1?size=5000", method="HEAD"), get("/api/photo/1?size=5000"))
    status, headers, _ = await wire.answer(head_only=True)
    assert (status, headers["content-length"], headers["x-cache"]) == (200, "5000", "HIT")
    status, headers, body = await wire.answer()
    assert (status, body) == (200, photo_body("1", 5000))
    assert answered_in_protocol == ["/api/photo/1?size=5000"] * 2
    wire.close()


async def test_conditional_and_range_requests_are_left_to_the_handler(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1"))
    _, headers, _ = await wire.answer()
    wire.send(get("/api/photo/1"))
    _, headers, _ = await wire.answer()
    etag = headers["etag"]
    wire.send(
        get("/api/photo/1", f"If-None-Match: {etag}"), get("/api/photo/1", "Range: bytes=0-9")
    )
    status, _, body = await wire.answer(head_only=True)
    assert (status, body) == (304, b"")
    status, headers, body = await wire.answer()
    assert (status, headers["content-range"], body) == (206, "bytes 0-9/1000", b"photo-1-ph")
    assert answered_in_protocol == ["/api/photo/1"]
    wire.close()


async def test_protocol_hits_are_counted_timed_and_logged_once_each(
    sidecache: Factory, access: AccessLines, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1?size=100&token=secret"))
    await wire.answer()
    for _ in range(5):
        wire.send(get("/api/photo/1?size=100&token=secret"))
        await wire.answer()
    wire.close()
    assert len(answered_in_protocol) == 5
    cache = proxy.runtime.snapshot()["cache"]
    assert cache["hits"] == 5 and cache["misses"] == 1  # type: ignore[index]
    assert proxy.runtime.snapshot()["routes"]["photo"]["hits"] == 5  # type: ignore[index]
    assert proxy.runtime.stats.latency["HIT"].count == 5
    await access.first(lambda _: len(access.lines) >= 6)
    hits = [line for line in access.lines if line["cache"] == "HIT"]
    assert len(hits) == 5
    assert hits[0]["route"] == "photo" and hits[0]["bytes"] == 100
    assert hits[0]["path"] == "/api/photo/1" and hits[0]["status"] == 200
    assert hits[0]["client"] == "127.0.0.1"
    assert "secret" not in hits[0]["query"]  # log.sensitive_query: token


async def test_a_malformed_request_after_protocol_hits_gets_the_parser_400(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1"))
        await wire.answer()
    assert answered_in_protocol == ["/api/photo/1"]
    wire.send(b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    status, _, _ = await wire.answer()
    assert status == 400
    async with asyncio.timeout(10):
        assert await wire.reader.read() == b""  # and the connection is closed
    wire.close()


async def test_an_idle_connection_after_protocol_hits_still_times_out(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache(server={"keepalive_timeout": "100ms"})
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1"))
        await wire.answer()
    assert answered_in_protocol == ["/api/photo/1"]
    async with asyncio.timeout(10):
        assert await wire.reader.read() == b""  # closed by sidecache, not by us
    wire.close()


async def test_a_request_head_trickled_after_a_protocol_hit_is_cut(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache(server={"header_timeout": "100ms"})
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1"))
        await wire.answer()
    wire.send(b"GET /api/photo/1 HTTP/1.1\r\nHost: loc")  # never finished
    async with asyncio.timeout(10):
        assert await wire.reader.read() == b""
    assert answered_in_protocol == ["/api/photo/1"]
    wire.close()


async def test_a_reload_changes_what_protocol_hits_say(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    route = {"name": "photo", "match": "/api/photo/{id}", "ttl": "5m"}
    proxy = await sidecache([route])
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1"))
        _, headers, _ = await wire.answer()
    assert "cache-control" not in headers
    new = proxy.instance.config.model_copy(
        update={"routes": [route_config(proxy, client_cache_control="max-age=7")]}
    )
    proxy.instance.apply(new)
    wire.send(get("/api/photo/1"))
    _, headers, _ = await wire.answer()
    assert headers["cache-control"] == "max-age=7"
    assert answered_in_protocol == ["/api/photo/1", "/api/photo/1"]
    wire.close()


def route_config(proxy: Running, **changes: object) -> object:
    (route,) = proxy.instance.config.routes
    return route.model_copy(update=changes)


# -- large bodies, handed over whole on uvloop (what sidecache runs on) -------------


async def test_a_large_protocol_hit_is_logged_with_its_bytes_once_sent(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    access: AccessLines,
    answered_in_protocol: list[str],
) -> None:
    size = 3_000_000
    proxy = await sidecache(cache={"max_object_bytes": "8MiB"})
    url = proxy.url.with_path("/api/photo/7").with_query(size=size)
    for _ in range(3):
        async with client.get(url) as r:
            assert await r.read() == photo_body("7", size)
    assert len(answered_in_protocol) == 2  # the connection is reused
    await access.first(lambda _: len([x for x in access.lines if x["cache"] == "HIT"]) == 2)
    hits = [line for line in access.lines if line["cache"] == "HIT"]
    assert [line["bytes"] for line in hits] == [size, size]
    assert proxy.runtime.stats.latency["HIT"].count == 2


async def test_a_large_protocol_hit_the_client_stops_reading_is_cut_at_send_timeout(
    sidecache: Factory, access: AccessLines, answered_in_protocol: list[str]
) -> None:
    size = 24 * 1024 * 1024  # far more than the socket buffers can hold
    proxy = await sidecache(cache={"max_object_bytes": "32MiB"}, server={"send_timeout": "200ms"})
    wire, head = await Wire.held_hit(proxy, f"/api/photo/8?size={size}", size)
    reader, writer = wire.reader, wire.writer
    assert b"X-Cache: HIT" in head
    assert answered_in_protocol == [f"/api/photo/8?size={size}"]
    # The head is out, the body is not: nothing counted or logged yet.
    assert proxy.runtime.stats.latency["HIT"].count == 0
    hit = await access.first(lambda line: line["cache"] == "HIT")  # once cut
    assert 0 < hit["bytes"] < size
    assert proxy.runtime.snapshot()["upstream"]["slow_clients"] == 1  # type: ignore[index]
    async with asyncio.timeout(10):
        while await reader.read(65536):  # what the kernel had, then the end
            pass
    writer.close()


async def test_requests_that_differ_in_any_header_are_decided_apart(
    sidecache: Factory, upstream: TestServer, answered_in_protocol: list[str]
) -> None:
    # The protocol remembers a plain hit's decision for a request sent again byte
    # for byte: a request that differs only in its Host (a forged one) or its
    # credentials must never be answered from what the other one was decided on.
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1?echo=x-forwarded-host"))
        _, headers, body = await wire.answer()
    assert headers["x-cache"] == "HIT" and body.startswith(b"localhost|")
    forged = "\r\n".join(
        ["GET /api/photo/1?echo=x-forwarded-host HTTP/1.1", "Host: evil.example", "", ""]
    )
    wire.send(forged.encode())
    _, headers, body = await wire.answer()
    assert headers["x-cache"] == "MISS" and body.startswith(b"evil.example|")
    wire.send(get("/api/photo/1?echo=x-forwarded-host", "Cookie: session=x"))
    _, headers, _ = await wire.answer()
    assert headers["x-cache"] == "BYPASS"
    wire.send(get("/api/photo/1?echo=x-forwarded-host"))  # the innocent client again
    _, headers, body = await wire.answer()
    assert headers["x-cache"] == "HIT" and body.startswith(b"localhost|")
    assert answered_in_protocol == ["/api/photo/1?echo=x-forwarded-host"] * 2
    assert upstream.app[HITS]["GET /api/photo/1?echo=x-forwarded-host"] == 3
    wire.close()


async def test_a_reload_forgets_the_decisions_it_changes(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    for _ in range(2):
        wire.send(get("/api/photo/1"))
        _, headers, _ = await wire.answer()
    assert headers["x-cache"] == "HIT"
    proxy.instance.apply(proxy.instance.config.model_copy(update={"routes": []}))
    wire.send(get("/api/photo/1"))
    _, headers, _ = await wire.answer()
    assert headers["x-cache"] == "BYPASS"  # no route any more: never from the cache
    assert answered_in_protocol == ["/api/photo/1"]
    wire.close()


async def test_remembered_decisions_are_bounded(sidecache: Factory) -> None:
    from proxy.handler import FAST_MEMO_HEAD, FAST_MEMO_SIZE

    proxy = await sidecache()
    handler = proxy.runtime.proxy
    wire = await Wire.open(proxy)
    for n in range(FAST_MEMO_SIZE + 10):
        wire.send(get(f"/api/photo/{n}?size=10", method="HEAD"))
        await wire.answer(head_only=True)
        assert len(handler._fast) <= FAST_MEMO_SIZE
    for _ in range(2):
        wire.send(get("/api/photo/1?size=10", "X-Pad: " + "x" * FAST_MEMO_HEAD))
        _, headers, _ = await wire.answer()
    assert headers["x-cache"] == "HIT"  # answered, but not remembered
    assert not [asked for asked in handler._fast if any(n == b"X-Pad" for n, _ in asked[2])]
    wire.close()


async def test_a_stored_204_is_served_without_a_length(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    target = "/api/photo/1?status=204&cache-control=max-age%3D60"
    for marker in ("MISS", "HIT"):
        wire.send(get(target))
        status, headers, body = await wire.answer()
        assert (status, headers["x-cache"], body) == (204, marker, b"")
        assert "content-length" not in headers  # RFC 9110 section 8.6
    wire.send(get("/api/photo/2"))  # the connection still frames answers right
    status, _, body = await wire.answer()
    assert (status, body) == (200, photo_body("2", 1000))
    assert answered_in_protocol == []
    wire.close()


@pytest.mark.parametrize("miss_at", [None, 40], ids=["all-hits", "a-miss-among-them"])
async def test_more_pipelined_hits_than_the_parser_queues_at_once_are_all_answered(
    sidecache: Factory, answered_in_protocol: list[str], miss_at: int | None
) -> None:
    # aiohttp's parser stops after 32 requests in flight and keeps the rest
    # buffered, with reading paused, until the queue drains: hits answered in the
    # protocol drain it too, so it must go on parsing.
    proxy = await sidecache()
    wire = await Wire.open(proxy)
    wire.send(get("/api/photo/1?size=10"))
    await wire.answer()
    requests = [get("/api/photo/1?size=10")] * 100
    if miss_at is not None:
        requests[miss_at] = get("/api/photo/2?size=10")
    wire.send(*requests)
    for n in range(100):
        status, headers, body = await wire.answer()
        expected = photo_body("2" if n == miss_at else "1", 10)
        assert (status, body) == (200, expected), n
        assert headers["x-cache"] == ("MISS" if n == miss_at else "HIT"), n
    wire.send(get("/api/photo/1?size=10"))  # and the connection reads on
    status, headers, _ = await wire.answer()
    assert (status, headers["x-cache"]) == (200, "HIT")
    assert len(answered_in_protocol) >= 40
    wire.close()


async def test_pipelined_large_hits_to_a_slow_reader_all_arrive_in_order(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    # The first answer fills the socket: the protocol stops answering, and the
    # rest (more than the parser queues at once) go the handler's way, in order.
    size = 300_000
    proxy = await sidecache()
    filler = await Wire.open(proxy)
    for n in range(2):
        filler.send(get(f"/api/photo/{n}?size={size}"))
        await filler.answer()
    filler.close()
    wire = await Wire.open_slow(proxy)
    wire.send(*[get(f"/api/photo/{n % 2}?size={size}") for n in range(40)])
    for n in range(40):
        status, headers, body = await wire.answer()
        assert (status, headers["x-cache"]) == (200, "HIT"), n
        assert body == photo_body(str(n % 2), size), n
    assert 1 <= len(answered_in_protocol) < 40
    wire.close()


async def test_a_stop_waits_for_a_large_protocol_hit_still_being_sent(
    sidecache: Factory, answered_in_protocol: list[str]
) -> None:
    size = 8 * 1024 * 1024
    proxy = await sidecache(cache={"max_object_bytes": "16MiB"})
    wire, _ = await Wire.held_hit(proxy, f"/api/photo/3?size={size}", size)
    reader, writer = wire.reader, wire.writer
    assert answered_in_protocol == [f"/api/photo/3?size={size}"]
    public = proxy.instance._public
    assert public is not None
    # In progress for the drain of a stop, like a body aiohttp is writing.
    assert public.requests_in_progress() == 1
    stopping = asyncio.create_task(proxy.instance.stop(grace=10))
    async with asyncio.timeout(10):
        body = await reader.readexactly(size)  # all of it, during the stop
    assert body == photo_body("3", size)
    await stopping
    assert public.requests_in_progress() == 0
    writer.close()


async def test_a_large_protocol_hit_is_cut_at_send_timeout_after_keep_alive_expires(
    sidecache: Factory, access: AccessLines, answered_in_protocol: list[str]
) -> None:
    """The keep-alive clock running out while the body is still held closes the
    connection the way aiohttp does (the transport is let go): the client that
    takes nothing is still cut at ``send_timeout``, and the hit logged."""
    size = 24 * 1024 * 1024
    proxy = await sidecache(
        cache={"max_object_bytes": "32MiB"},
        server={"send_timeout": "300ms", "keepalive_timeout": "50ms"},
    )
    wire, head = await Wire.held_hit(proxy, f"/api/photo/8?size={size}", size)
    assert b"X-Cache: HIT" in head
    assert answered_in_protocol == [f"/api/photo/8?size={size}"]
    hit = await access.first(lambda line: line["cache"] == "HIT")  # once cut
    assert 0 < hit["bytes"] < size
    assert proxy.runtime.snapshot()["upstream"]["slow_clients"] == 1  # type: ignore[index]
    wire.close()


async def test_a_stop_cuts_a_large_protocol_hit_the_client_never_takes_at_send_timeout(
    sidecache: Factory, access: AccessLines, answered_in_protocol: list[str]
) -> None:
    """A stop waits for a large hit still held, but not past ``send_timeout`` for a
    client that takes nothing: the grace period is not spent on it."""
    size = 24 * 1024 * 1024
    proxy = await sidecache(cache={"max_object_bytes": "32MiB"}, server={"send_timeout": "300ms"})
    wire, _ = await Wire.held_hit(proxy, f"/api/photo/8?size={size}", size)
    assert answered_in_protocol == [f"/api/photo/8?size={size}"]
    public = proxy.instance._public
    assert public is not None and public.requests_in_progress() == 1
    stopping = asyncio.create_task(proxy.instance.stop(grace=600))
    hit = await access.first(lambda line: line["cache"] == "HIT")  # once cut
    assert 0 < hit["bytes"] < size
    async with asyncio.timeout(30):  # far below the grace period
        await stopping
    assert public.requests_in_progress() == 0
    assert proxy.runtime.snapshot()["upstream"]["slow_clients"] == 1  # type: ignore[index]
    wire.close()


async def test_a_head_trickled_behind_a_large_protocol_hit_never_taken_is_cut_once(
    sidecache: Factory, access: AccessLines, answered_in_protocol: list[str]
) -> None:
    """The header timer closing a connection whose large hit is still held: the
    client that takes nothing is still cut at ``send_timeout``, the hit logged once."""
    size = 24 * 1024 * 1024
    proxy = await sidecache(
        cache={"max_object_bytes": "32MiB"},
        server={"send_timeout": "300ms", "header_timeout": "50ms"},
    )
    wire, _ = await Wire.held_hit(proxy, f"/api/photo/8?size={size}", size)
    wire.send(b"GET /api/photo/9 HTTP/1.1\r\nHo")  # and never the rest
    hit = await access.first(lambda line: line["cache"] == "HIT")  # once cut
    assert 0 < hit["bytes"] < size
    assert answered_in_protocol == [f"/api/photo/8?size={size}"]
    assert proxy.runtime.snapshot()["upstream"]["slow_clients"] == 1  # type: ignore[index]
    public = proxy.instance._public
    assert public is not None and public.requests_in_progress() == 0
    assert [line["cache"] for line in access.lines].count("HIT") == 1
    wire.close()
