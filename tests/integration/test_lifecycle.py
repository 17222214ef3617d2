"""The serving process: SIGHUP reloads in place, SIGTERM drains in-flight requests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def serving(path: Path, argv: list[str] | None = None) -> AsyncIterator[Served]:
    """``sidecache serve -c path`` (or ``argv`` with ``$SIDECACHE_CONFIG`` = path) as a
    process, once it listens; killed if left running."""
    command = argv or [sys.executable, "-m", "proxy", "serve", "-c", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, "SIDECACHE_CONFIG": str(path)},
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while not (m := LISTENING.search(line := await proc.stderr.readline())):
                assert line, "serve exited before listening"
                log.append(line)
        yield Served(proc, int(m.group(1)), int(m.group(2)), log)
    finally:
        await ensure_dead(proc)


@pytest.fixture
async def serve_process(tmp_path: Path, upstream: TestServer) -> AsyncIterator[tuple[Served, Path]]:
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO))
    async with serving(path) as served:
        yield served, path


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


def image_command() -> list[str]:
    """The Dockerfile's ENTRYPOINT + CMD, run from this environment's scripts."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ENTRYPOINT", "CMD"):
            found[word] = json.loads(rest)
    program, *args = found["ENTRYPOINT"] + found["CMD"]
    return [str(Path(sys.executable).parent / program), *args]


async def test_the_images_command_as_pid_1_drains_and_exits_0_on_sigterm(
    tmp_path: Path, upstream: TestServer
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO))
    command = image_command()
    assert command[1:] == ["serve"]  # the config comes from $SIDECACHE_CONFIG, as in the image
    async with serving(path, command) as served, aiohttp.ClientSession() as client:
        base = f"http://127.0.0.1:{served.public}"
        in_flight = asyncio.create_task(client.get(f"{base}/gated/photo/1"))
        async with asyncio.timeout(20):
            await upstream.app[ARRIVED].wait()
        served.proc.send_signal(signal.SIGTERM)
        await served.wait_log(b"stopping: finishing in-flight requests")
        upstream.app[GATE].set()
        async with asyncio.timeout(20):
            r = await in_flight
            assert r.status == 200
            assert len(await r.read()) == 1000
        async with asyncio.timeout(20):
            assert await served.proc.wait() == 0


async def test_sigterm_keeps_the_control_port_up_and_drains_within_one_grace_period(
    tmp_path: Path, upstream: TestServer
) -> None:
    grace = 3.0
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO).replace("20s", f"{grace:g}s"))
    async with serving(path) as served, aiohttp.ClientSession() as client:
        base = f"http://127.0.0.1:{served.public}"
        control = f"http://127.0.0.1:{served.control}"
        # A pass-through stream the app never finishes (it waits for GATE).
        async with client.get(f"{base}/stream/1") as stream:
            assert stream.status == 200
            assert await stream.content.readexactly(12) == b"first-chunk;"
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            await served.wait_log(b"stopping: finishing in-flight requests")
            # Draining: the control port answers; readiness turns load balancers away.
            async with client.get(f"{control}/healthz") as r:
                assert r.status == 200
            async with client.get(f"{control}/readyz") as r:
                assert r.status == 503
                assert await r.text() == "draining\n"
            async with client.get(f"{control}/stats") as r:
                assert r.status == 200
                assert (await r.json())["upstream"]["in_flight"] == 1
            with pytest.raises(aiohttp.ClientConnectionError):
                await client.get(f"{base}/api/photo/2")  # the public port no longer accepts
            # The grace period ends: the stream is cut, never passed off as complete.
            with pytest.raises(aiohttp.ClientPayloadError):
                await stream.content.read()
            cut = time.monotonic() - sent
        async with asyncio.timeout(20):
            assert await served.proc.wait() == 0
        exited = time.monotonic() - sent
    upstream.app[GATE].set()
    # One grace period, not two (aiohttp's shutdown waits its timeout twice).
    assert grace <= cut < 2 * grace
    assert exited < 2 * grace


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
