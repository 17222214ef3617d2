"""WebSocket tunnels: a real aiohttp WebSocket app behind sidecache, aiohttp's
client in front. The handshake goes through, messages go both ways, closes go
across with their code, and tunnels neither hold admission slots nor outlive a stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import AccessLines, Factory

pytestmark = pytest.mark.asyncio

WS_APP_CLOSES: web.AppKey[asyncio.Queue[int | None]] = web.AppKey("closes", asyncio.Queue)
_FORWARDING = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            if msg.data == "close-me":
                await ws.close(code=4002, message=b"bye")
                break
            await ws.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    request.app[WS_APP_CLOSES].put_nowait(ws.close_code)
    return ws


async def _forwarding(request: web.Request) -> web.WebSocketResponse:
    """Sends the handshake's forwarding headers, as the app saw them, and closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({name: request.headers.get(name) for name in _FORWARDING})
    await ws.close()
    return ws


async def _refused(request: web.Request) -> web.Response:
    return web.Response(status=403, text="no")


async def _plain(request: web.Request) -> web.Response:
    return web.Response(text="plain")


@pytest.fixture
async def ws_app(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    app = web.Application()
    app[WS_APP_CLOSES] = asyncio.Queue()
    app.router.add_get("/ws/echo", _echo)
    app.router.add_get("/ws/refused", _refused)
    app.router.add_get("/ws/forwarding", _forwarding)
    app.router.add_get("/plain", _plain)
    return await aiohttp_server(app)


def _url(server: TestServer) -> str:
    return str(server.make_url("/")).rstrip("/")


async def test_text_and_binary_are_echoed_through_the_tunnel(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    async with client.ws_connect(proxy.url / "ws/echo", protocols=("other", "chat")) as ws:
        assert ws.protocol == "chat"  # the subprotocol the app chose
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes() == b"\x00\x01binary"


async def test_a_close_from_the_client_reaches_the_app_with_its_code(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    ws = await client.ws_connect(proxy.url / "ws/echo")
    await ws.send_str("ping")
    assert await ws.receive_str() == "ping"
    await ws.close(code=4001, message=b"done")
    async with asyncio.timeout(10):
        assert await ws_app.app[WS_APP_CLOSES].get() == 4001


async def test_a_close_from_the_app_reaches_the_client_with_its_code(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    async with client.ws_connect(proxy.url / "ws/echo") as ws:
        await ws.send_str("close-me")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4002, "bye")


async def test_a_refused_handshake_is_relayed_with_its_status(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(proxy.url / "ws/refused")
    assert refused.value.status == 403
    assert refused.value.headers is not None
    assert refused.value.headers["X-Cache"] == "BYPASS"


async def test_tunnels_hold_no_admission_slot(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(
        upstream_url=_url(ws_app), upstream={"max_connections": 2, "queue_timeout": "1s"}
    )
    tunnels = [await client.ws_connect(proxy.url / "ws/echo") for _ in range(50)]
    try:
        for i, ws in enumerate(tunnels):
            await ws.send_str(f"n{i}")
        for i, ws in enumerate(tunnels):
            assert await ws.receive_str() == f"n{i}"
        # 50 tunnels open, 2 admission slots: a plain request still gets one.
        async with client.get(proxy.url / "plain") as r:
            assert r.status == 200
            assert await r.text() == "plain"
        assert len(proxy.runtime.proxy.tunnels) == 50
    finally:
        for ws in tunnels:
            await ws.close()


async def test_one_tunnel_over_max_tunnels_is_refused_with_503(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(
        upstream_url=_url(ws_app), upstream={"max_tunnels": 2}, log={"access": "json"}
    )
    first = await client.ws_connect(proxy.url / "ws/echo")
    second = await client.ws_connect(proxy.url / "ws/echo")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(proxy.url / "ws/echo")
    assert refused.value.status == 503
    await first.close()
    # Its place is free again once it is accounted for (its access-log line).
    await access.first(lambda line: line.get("status") == 101)
    assert len(proxy.runtime.proxy.tunnels) == 1
    third = await client.ws_connect(proxy.url / "ws/echo")
    await third.send_str("x")
    assert await third.receive_str() == "x"
    await third.close()
    await second.close()


async def test_a_tunnel_counts_as_bypass_in_stats_metrics_and_access_log(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app), log={"access": "json"})
    async with client.ws_connect(proxy.url / "ws/echo") as ws:
        await ws.send_str("12345")
        assert await ws.receive_str() == "12345"
        await ws.send_bytes(b"abc")
        assert await ws.receive_bytes() == b"abc"
    line = await access.first(lambda line: line.get("path") == "/ws/echo")
    assert line["cache"] == "BYPASS"
    assert line["status"] == 101
    assert line["bytes"] == 8  # the message bytes relayed to the client
    assert "duration_ms" in line
    async with client.get(proxy.control / "stats") as r:
        stats: dict[str, Any] = await r.json()
    assert stats["cache"]["bypass"] == 1
    assert stats["cache"]["hits"] == stats["cache"]["misses"] == 0
    assert proxy.runtime.store.figures().entries == 0  # never touches the cache
    async with client.get(proxy.control / "metrics") as r:
        metrics = await r.text()
    assert 'sidecache_requests_total{cache_status="BYPASS",route=""} 1.0' in metrics


class _Said(logging.Handler):
    """Sets an event when a log message containing ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def stopping_said() -> Iterator[_Said]:
    said = _Said("stopping: finishing in-flight requests")
    logger = logging.getLogger("proxy.server")
    logger.addHandler(said)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield said
    finally:
        logger.removeHandler(said)
        logger.setLevel(level)


async def test_a_tunnel_lives_through_the_grace_period_then_is_closed(
    sidecache: Factory,
    ws_app: TestServer,
    client: aiohttp.ClientSession,
    stopping_said: _Said,
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    ws = await client.ws_connect(proxy.url / "ws/echo")
    stop = asyncio.create_task(proxy.instance.stop(grace=2.0))
    async with asyncio.timeout(10):
        await stopping_said.seen.wait()
    # Draining: the tunnel still carries messages within the grace period.
    await ws.send_str("still here")
    assert await ws.receive_str() == "still here"
    async with asyncio.timeout(10):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1001  # going away
    async with asyncio.timeout(10):
        assert await ws_app.app[WS_APP_CLOSES].get() == 1001
        await stop
    await ws.close()


async def test_a_tunnel_lives_through_a_reload(
    sidecache: Factory, ws_app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=_url(ws_app))
    async with client.ws_connect(proxy.url / "ws/echo") as ws:
        await ws.send_str("before")
        assert await ws.receive_str() == "before"
        config = proxy.runtime.config
        proxy.instance.apply(config.model_copy(update={"routes": ()}))
        await ws.send_str("after")
        assert await ws.receive_str() == "after"


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        # From a trusted peer (the default trusts loopback), as for any request:
        # the client address appended, the scheme and host passed on.
        (None, ["203.0.113.7, 127.0.0.1", "https", "shop.example"]),
        # From any other peer: set from what sidecache saw, the client's dropped.
        (["10.0.0.0/8"], ["127.0.0.1", "http", None]),
    ],
)
async def test_the_handshake_follows_the_trusted_proxies_rules(
    sidecache: Factory,
    ws_app: TestServer,
    client: aiohttp.ClientSession,
    trusted: list[str] | None,
    expected: list[str | None],
) -> None:
    server = {} if trusted is None else {"trusted_proxies": trusted}
    proxy = await sidecache(upstream_url=_url(ws_app), server=server)
    sent = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "shop.example",
    }
    async with client.ws_connect(proxy.url / "ws/forwarding", headers=sent) as ws:
        seen = await ws.receive_json()
    host = seen["X-Forwarded-Host"]
    if trusted is not None:
        assert host is not None and host.startswith("127.0.0.1")  # what sidecache saw
        host = None
    assert [seen["X-Forwarded-For"], seen["X-Forwarded-Proto"], host] == expected
