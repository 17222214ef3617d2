"""The serving process: SIGHUP reloads in place, SIGTERM drains in-flight requests."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import ROOT, ensure_dead, stop_gracefully
from tests.integration.upstream_app import ARRIVED, GATE, HITS

LISTENING = re.compile(rb"listening on [^:]+:(\d+) \(control [^:]+:(\d+)\)")

CONFIG = """
listen: 127.0.0.1:0
control: {{listen: "127.0.0.1:0"}}
upstream: {{url: "http://127.0.0.1:{port}"}}
server: {{shutdown_grace: 20s}}
routes:
{routes}
"""
PHOTO = '  - {name: photo, match: "/api/photo/{id}", ttl: 5m}'
FILES = '  - {name: files, match: "/files/{id}", ttl: 5m}'


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    public: int
    control: int
    log: list[bytes]

    async def wait_log(self, needle: bytes) -> None:
        assert self.proc.stderr is not None
        async with asyncio.timeout(20):
            while not any(needle in line for line in self.log):
                line = await self.proc.stderr.readline()
                assert line, f"serve exited before logging {needle!r}"
                self.log.append(line)


@pytest.fixture
async def serve_process(tmp_path: Path, upstream: TestServer) -> AsyncIterator[tuple[Served, Path]]:
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "-c", str(path),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while not (m := LISTENING.search(line := await proc.stderr.readline())):
                assert line, "serve exited before listening"
                log.append(line)
        yield Served(proc, int(m.group(1)), int(m.group(2)), log), path
    finally:
        await ensure_dead(proc)


async def x_cache(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url) as r:
        await r.read()
        return r.headers["X-Cache"]


async def test_sighup_reloads_routes_and_keeps_the_cache(
    serve_process: tuple[Served, Path], upstream: TestServer
) -> None:
    served, path = serve_process
    base = f"http://127.0.0.1:{served.public}"
    async with aiohttp.ClientSession() as client:
        assert await x_cache(client, f"{base}/api/photo/1") == "MISS"
        assert await x_cache(client, f"{base}/files/1") == "BYPASS"
        path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO + "\n" + FILES))
        served.proc.send_signal(signal.SIGHUP)
        await served.wait_log(b"config reloaded: 2 routes")
        assert await x_cache(client, f"{base}/api/photo/1") == "HIT"  # the cache stayed
        assert await x_cache(client, f"{base}/files/1") == "MISS"  # the new route works
        path.write_text("routes: [oops")
        served.proc.send_signal(signal.SIGHUP)
        await served.wait_log(b"reload failed, keeping the current config")
        assert await x_cache(client, f"{base}/files/1") == "HIT"
        async with client.get(f"http://127.0.0.1:{served.control}/stats") as r:
            stats = await r.json()
        assert stats["cache"]["hits"] == 2 and stats["cache"]["misses"] == 2  # counters stayed
    assert await stop_gracefully(served.proc) == 0


async def test_sigterm_lets_in_flight_requests_finish(
    serve_process: tuple[Served, Path], upstream: TestServer
) -> None:
    served, _ = serve_process
    base = f"http://127.0.0.1:{served.public}"
    async with aiohttp.ClientSession() as client:
        in_flight = asyncio.create_task(client.get(f"{base}/gated/photo/1"))
        async with asyncio.timeout(20):
            await upstream.app[ARRIVED].wait()
        served.proc.send_signal(signal.SIGTERM)
        await served.wait_log(b"stopping: finishing in-flight requests")
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.get(f"{base}/api/photo/2")  # no longer accepting
        upstream.app[GATE].set()
        async with asyncio.timeout(20):
            r = await in_flight
            assert r.status == 200
            assert len(await r.read()) == 1000
        async with asyncio.timeout(20):
            assert await served.proc.wait() == 0
    assert upstream.app[HITS]["GET /api/photo/2"] == 0


async def test_sighup_shortens_the_ttl_of_stored_entries(
    serve_process: tuple[Served, Path], upstream: TestServer
) -> None:
    served, path = serve_process
    url = f"http://127.0.0.1:{served.public}/api/photo/1"
    async with aiohttp.ClientSession() as client:
        assert await x_cache(client, url) == "MISS"  # stored under ttl 5m
        path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO.replace("5m", "1m")))
        served.proc.send_signal(signal.SIGHUP)
        await served.wait_log(b"config reloaded: 1 routes")
        async with client.get(url) as r:
            await r.read()
            assert r.headers["X-Cache"] == "HIT"
            ttl = int(r.headers["Cache-Status"].rpartition("ttl=")[2])
        assert ttl <= 60  # the new ttl counts from when it was stored, not the old one
    assert await stop_gracefully(served.proc) == 0
