"""Answers sidecache writes itself (errors on the public port, the control port)
name no server software and no version."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, free_port_that_refuses


async def raw_head(port: int | None, request: bytes) -> list[str]:
    """The status line and header lines of the answer to ``request``."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    return head.decode().split("\r\n")[:-2]


def names(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0].lower() for line in lines[1:]}


async def test_a_gateway_error_carries_only_its_own_headers(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=f"http://127.0.0.1:{free_port_that_refuses()}")
    async with client.get(proxy.url / "echo") as r:
        assert r.status == 502
        assert await r.text() == "502 upstream unavailable\n"
        assert {n.lower() for n in r.headers} == {
            "content-type",
            "content-length",
            "date",
            "x-cache",
        }
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_a_refused_request_names_no_server(sidecache: Factory, upstream: TestServer) -> None:
    proxy = await sidecache()
    refused = await raw_head(proxy.url.port, b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert refused[0].startswith("HTTP/1.1 400")
    assert names(refused) == {"content-type", "content-length", "date"}
    # A request aiohttp itself cannot parse: its own error page, without Server.
    malformed = await raw_head(proxy.url.port, b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n")
    assert malformed[0].split(" ")[1] == "400"
    assert "server" not in names(malformed)


async def test_the_control_port_names_itself_without_versions(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for path in ("healthz", "stats", "no-such-page"):
        async with client.get(proxy.control / path) as r:
            assert r.headers.getall("Server") == ["sidecache"], path
