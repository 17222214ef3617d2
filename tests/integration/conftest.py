"""Fixtures: a real upstream on a real socket, sidecache instances in front of it,
and a client that forwards bytes as they are (no cookie jar, no decompression)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.config import parse_config
from proxy.runtime import Runtime
from proxy.server import Sidecache
from tests.integration.demo_fixtures import demo_db, seeded_db_file  # noqa: F401 - fixtures
from tests.integration.upstream_app import build_app

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_ROUTES: list[dict[str, Any]] = [
    {"name": "photo", "match": "/api/photo/{id}", "ttl": "5m"},
    {"name": "gated", "match": "/gated/photo/{id}", "ttl": "5m"},
]


@dataclass
class Running:
    instance: Sidecache
    url: URL
    control: URL

    @property
    def runtime(self) -> Runtime:
        assert self.instance.runtime is not None
        return self.instance.runtime


Factory = Callable[..., Awaitable[Running]]


class Clock:
    """A clock the test moves: time is an input, never slept through."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked ``uvloop`` run on uvloop (what ``sidecache serve`` runs on), the
    rest on asyncio's default loop."""
    if item.get_closest_marker("uvloop") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(build_app())


def free_port_that_refuses() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def sidecache(upstream: TestServer) -> AsyncIterator[Factory]:
    started: list[Sidecache] = []

    async def make(
        routes: list[dict[str, Any]] | None = None,
        *,
        upstream_url: str | None = None,
        clock: Callable[[], float] | None = None,
        **sections: Any,
    ) -> Running:
        data: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "upstream": {"url": upstream_url or str(upstream.make_url("/")).rstrip("/")},
            "control": {"listen": "127.0.0.1:0"},
            "routes": DEFAULT_ROUTES if routes is None else routes,
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            else:
                data[name] = value
        config = parse_config(data, source="<test>", environ={})
        instance = Sidecache(config) if clock is None else Sidecache(config, clock=clock)
        await instance.start()
        started.append(instance)
        return Running(
            instance,
            URL(f"http://127.0.0.1:{instance.public_port}"),
            URL(f"http://127.0.0.1:{instance.control_port}"),
        )

    yield make
    for instance in started:
        await instance.stop(grace=1.0)


Line = dict[str, Any]


class AccessLines(logging.Handler):
    """The access log's lines, awaitable as they are written. The access log's
    writer thread hands them over: ``messages`` has each as written, ``lines``
    those that are JSON, parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.lines: list[Line] = []
        self._new = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if message.startswith("{"):
            self.lines.append(json.loads(message))
        loop = self._loop  # read after the append: ``first`` sets it before it looks
        if loop is not None:
            loop.call_soon_threadsafe(self._new.set)

    async def first(self, wanted: Callable[[Line], bool]) -> Line:
        self._loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):
            while True:
                self._new.clear()
                for line in list(self.lines):
                    if wanted(line):
                        return line
                await self._new.wait()


@pytest.fixture
def access() -> Iterator[AccessLines]:
    handler = AccessLines()
    logger = logging.getLogger("sidecache.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        yield session


@dataclass
class FaultUpstream:
    """The misbehaving upstream process (tests/integration/fault_upstream.py)."""

    process: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def mode(self, mode: str) -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/_mode?set={mode}") as r:
            assert r.status == 200

    async def count(self) -> int:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/_count") as r:
            data: dict[str, int] = await r.json(content_type=None)
            return data["count"]

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def fault_upstream() -> AsyncIterator[FaultUpstream]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.fault_upstream",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = await proc.stdout.readline()
    upstream = FaultUpstream(proc, json.loads(line)["port"])
    yield upstream
    await upstream.kill()


async def stop_gracefully(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` and return the exit code (bounded wait)."""
    proc.send_signal(sig)
    async with asyncio.timeout(30):
        return await proc.wait()


async def ensure_dead(proc: asyncio.subprocess.Process) -> None:
    """Kill a process a test left running (after a failure)."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
