"""The access log off the event loop: every line written by the time stop returns,
and a bounded queue whose drops are counted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gate import WAIT, Gate
from tests.integration.conftest import Factory


async def test_every_request_is_on_stderr_once_stop_returns(
    sidecache: Factory, client: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = await sidecache()
    paths = [f"/api/photo/{n % 7}" for n in range(300)]

    async def get(path: str) -> None:
        async with client.get(proxy.url.with_path(path).with_query(size="10", n=path)) as r:
            await r.read()

    for start in range(0, len(paths), 30):
        await asyncio.gather(*(get(p) for p in paths[start : start + 30]))
    await proxy.instance.stop()
    lines = [json.loads(s) for s in capsys.readouterr().err.splitlines() if s.startswith('{"time"')]
    assert sorted(line["path"] for line in lines) == sorted(paths)
    assert proxy.runtime.stats.access_log_dropped == 0


@pytest.fixture
def gate() -> Iterator[Gate]:
    handler = Gate()
    logger = logging.getLogger("sidecache.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        handler.open.set()
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_lines_beyond_the_queue_are_dropped_and_counted(
    sidecache: Factory, client: aiohttp.ClientSession, gate: Gate
) -> None:
    proxy = await sidecache(log={"access_queue": 1})
    async with client.get(proxy.url / "api/photo/1") as r:
        await r.read()
    assert await asyncio.to_thread(gate.entered.wait, WAIT)  # the writer is stuck in line 1
    for n in (2, 3, 4):
        async with client.get(proxy.url / f"api/photo/{n}") as r:  # answered all the same
            assert r.status == 200
            await r.read()
    async with client.get(proxy.control / "stats") as r:
        assert (await r.json())["access_log_dropped"] == 2
    async with client.get(proxy.control / "metrics") as r:
        text = await r.text()
    dropped = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("sidecache_access_log_dropped")
    }
    assert dropped == {"sidecache_access_log_dropped_total": 2.0}
    gate.open.set()
    await proxy.instance.stop()
    paths = [json.loads(line)["path"] for line in gate.lines]
    assert paths == ["/api/photo/1", "/api/photo/2"]
