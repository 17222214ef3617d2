"""The shared tier against a real Redis (127.0.0.1:6379, or $SIDECACHE_TEST_REDIS).

Skipped when Redis is absent, unless SIDECACHE_REQUIRE_SERVICES=1 (CI), where
its absence fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis_asyncio
from aiohttp.test_utils import TestServer

from proxy.breaker import Breaker, BreakerState
from proxy.entry import StoredResponse
from proxy.keys import build_key
from proxy.shared import SharedTier
from proxy.stats import Stats
from proxy.store import MemoryLRUCache
from proxy.tiers import Tiers
from tests.integration.conftest import (
    ROOT,
    Clock,
    Factory,
    Running,
    ensure_dead,
    free_port_that_refuses,
)
from tests.integration.demo_fixtures import require_services
from tests.integration.upstream_app import ARRIVED, GATE, HITS, photo_body

pytestmark = pytest.mark.services
LISTENING = re.compile(rb"listening on [^:]+:(\d+) \(control [^:]+:(\d+)\)")
REDIS_URL = os.environ.get("SIDECACHE_TEST_REDIS", "redis://127.0.0.1:6379/0")
BODY = bytes(range(256)) * 4000


def entry(key: str, now: float) -> StoredResponse:
    return StoredResponse(
        key=key,
        route="photo",
        path="/api/photo/1",
        status=200,
        headers=(("Content-Type", "image/jpeg"),),
        body=BODY,
        etag='"e"',
        stored_at=now,
        fresh_until=now + 60,
        stale_until=now + 120,
    )


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis_asyncio.RedisError) as exc:
        await client.aclose()
        if require_services():
            pytest.fail(f"Redis is required (SIDECACHE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    name = f"sidecache-test-{uuid.uuid4().hex[:8]}"
    yield name
    keys = [k async for k in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def tier(namespace: str, clock: Clock, *, url: str = REDIS_URL, **kw: object) -> SharedTier:
    breaker = kw.pop("breaker", Breaker())
    return SharedTier(
        url,
        namespace=namespace,
        timeout=float(kw.pop("timeout", 1.0)),  # type: ignore[arg-type]
        lock_timeout=float(kw.pop("lock_timeout", 10.0)),  # type: ignore[arg-type]
        breaker=breaker,  # type: ignore[arg-type]
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
    )


async def test_entries_round_trip_byte_for_byte_between_replicas(namespace: str) -> None:
    here, there = Clock(1000.0), Clock(1000.0)
    a, b = tier(namespace, here), tier(namespace, there)
    try:
        key = "photo\napp:8000\n/api/photo/1?x=\u00e9 & spaces/../%2F"
        assert await b.get(key) is None
        assert await a.put(entry(key, here.now))
        there.now += 10  # the other replica reads it 10 s later
        got = await b.get(key)
        assert got is not None and got.body == BODY and got.key == key
        assert got.fresh_until - there.now == pytest.approx(50.0)
        pttl = await b.cache.client.pttl(b.redis_key(key))
        assert namespace in b.redis_key(key) and "/" not in b.redis_key(key)
        assert 0 < pttl <= 120_000  # expires with the entry's last usable instant
        assert await a.delete(key)
        assert await b.get(key) is None
        assert (b.hits, b.misses, b.errors) == (1, 2, 0)
    finally:
        await a.close()
        await b.close()


async def test_a_path_purge_drops_every_spelling_of_the_path(namespace: str) -> None:
    clock = Clock(1000.0)
    a, b = tier(namespace, clock), tier(namespace, clock)
    try:
        spellings = ["/c/x", "/c/x/", "/C/X", "/c/X/"]
        for path in [*spellings, "/c/xy"]:
            assert await a.put(replace(entry("k" + path, clock.now), path=path))
        assert await b.purge("path", "/c/x") == len(spellings) + 2  # and the two indexes
        assert [await b.get("k" + path) is None for path in spellings] == [True] * 4
        assert await b.get("k/c/xy") is not None
    finally:
        await a.close()
        await b.close()


async def test_the_fill_lock_has_one_owner_and_a_lease(namespace: str) -> None:
    clock = Clock()
    a, b = tier(namespace, clock, lock_timeout=0.3), tier(namespace, clock, lock_timeout=0.3)
    try:
        assert await a.lock("k", "token-a")
        assert not await b.lock("k", "token-b")
        await b.unlock("k", "token-b")  # not b's: nothing released
        assert await b.locked("k")
        await a.unlock("k", "token-a")
        assert not await a.locked("k")
        assert await b.lock("k", "token-b")
        async with asyncio.timeout(10):  # the holder "dies": the lease runs out
            while await a.locked("k"):  # noqa: ASYNC110 - Redis expiry has no event
                await asyncio.sleep(0.05)
        assert await a.lock("k", "token-a")
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_tier_degrades_and_the_breaker_opens(namespace: str) -> None:
    clock = Clock()
    down = tier(
        namespace,
        clock,
        url=f"redis://127.0.0.1:{free_port_that_refuses()}/0",
        timeout=0.5,
        breaker=Breaker(failures=2, reset=30),
    )
    try:
        async with asyncio.timeout(10):
            assert await down.get("k") is None
            assert not await down.put(entry("k", clock.now))
            assert down.breaker.state is BreakerState.OPEN
            assert await down.get("k") is None  # skipped: no connection attempt at all
        assert (down.errors, down.skipped) == (2, 1)
        assert down.figures()["state"] == "open"
    finally:
        await down.close()


async def test_replicas_share_cold_fills_hits_and_purges(
    namespace: str, sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    shared = {"shared": {"url": REDIS_URL, "namespace": namespace}}
    a, b, c = [await sidecache(cache=shared) for _ in range(3)]
    url = "gated/photo/1"

    async def get(replica: Running) -> tuple[str, str, bytes]:
        # Replicas behind one public name: the host is part of the key.
        async with client.get(replica.url / url, headers={"Host": "photos.example"}) as r:
            return r.headers["X-Cache"], r.headers["Cache-Status"], await r.read()

    first = [asyncio.create_task(get(a)), asyncio.create_task(get(b))]
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    upstream.app[GATE].set()
    async with asyncio.timeout(20):
        results = await asyncio.gather(*first)
    assert all(body == photo_body("1", 1000) for _, _, body in results)
    assert upstream.app[HITS]["GET /gated/photo/1"] == 1  # one request across the cluster
    # A third replica, cold in-process, finds it in the shared tier.
    x_cache, cache_status, body = await get(c)
    assert (x_cache, body) == ("HIT", photo_body("1", 1000))
    assert "detail=shared" in cache_status
    assert c.runtime.snapshot()["shared"]["served"] == 1  # type: ignore[index]
    assert upstream.app[HITS]["GET /gated/photo/1"] == 1
    # A purge on one replica reaches the others' in-process tiers and the shared tier.
    async with client.post(a.control / "purge", json={"path": "/gated/photo/1"}) as r:
        assert r.status == 200
    async with asyncio.timeout(10):
        while b.runtime.store.figures().entries or c.runtime.store.figures().entries:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # pub/sub delivery: no event to await here
    assert (await get(c))[0] == "MISS"
    assert upstream.app[HITS]["GET /gated/photo/1"] == 2


async def test_a_dead_shared_tier_costs_little_and_never_fails_a_request(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    dead = {
        "shared": {
            "url": f"redis://127.0.0.1:{free_port_that_refuses()}/0",
            "timeout": "200ms",
            "breaker_failures": 2,
        }
    }
    proxy = await sidecache(cache=dead)
    async with asyncio.timeout(10):
        for i in range(4):
            async with client.get(proxy.url / f"api/photo/{i}") as r:
                assert r.status == 200 and r.headers["X-Cache"] == "MISS"
        async with client.get(proxy.url / "api/photo/0") as r:
            assert r.headers["X-Cache"] == "HIT"  # the in-process tier carries on
    shared = proxy.runtime.snapshot()["shared"]
    assert shared["state"] == "open" and shared["errors"] == 2  # type: ignore[index]
    assert shared["skipped"] > 0  # type: ignore[index]
    async with client.get(proxy.control / "metrics") as r:
        text = await r.text()
    assert 'sidecache_shared_up{state="open"} 0.0' in text
    assert 'sidecache_shared_lookups_total{result="error"} 2.0' in text
    async with client.get(proxy.control / "readyz") as r:
        assert r.status == 200  # degraded, still serving
        assert "shared tier open" in await r.text()


async def test_redis_stopped_mid_test_and_restarted_is_picked_up(
    tmp_path: Path, sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    if shutil.which("redis-server") is None:
        if require_services():
            pytest.fail("redis-server is required (SIDECACHE_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server not installed")
    port = free_port_that_refuses()

    async def start_redis() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while b"Ready to accept connections" not in await proc.stdout.readline():
                pass
        return proc

    clock = Clock()
    redis_proc = await start_redis()
    try:
        shared = {
            "shared": {
                "url": f"redis://127.0.0.1:{port}/0",
                "timeout": "300ms",
                "breaker_failures": 1,
                "breaker_reset": "5s",
            }
        }
        proxy = await sidecache(cache=shared, clock=clock)
        async with client.get(proxy.url / "api/photo/1") as r:
            assert r.headers["X-Cache"] == "MISS"
        assert proxy.runtime.snapshot()["shared"]["state"] == "closed"  # type: ignore[index]
        await ensure_dead(redis_proc)  # Redis goes away
        async with asyncio.timeout(10):
            async with client.get(proxy.url / "api/photo/2") as r:
                assert (r.status, r.headers["X-Cache"]) == (200, "MISS")
            async with client.get(proxy.url / "api/photo/1") as r:
                assert r.headers["X-Cache"] == "HIT"
        assert proxy.runtime.snapshot()["shared"]["state"] == "open"  # type: ignore[index]
        redis_proc = await start_redis()  # back, empty
        clock.now += 6  # past breaker_reset: the next lookup is a trial
        async with client.get(proxy.url / "api/photo/3") as r:
            assert r.headers["X-Cache"] == "MISS"
        assert proxy.runtime.snapshot()["shared"]["state"] == "closed"  # type: ignore[index]
    finally:
        await ensure_dead(redis_proc)


async def test_a_slow_shared_tier_is_asked_once_per_request(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    """Redis that accepts connections and never answers: each miss pays the shared
    tier's timeout once (the lookup), not again for the lock or the write."""

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read until the client gives up; never answer
        writer.close()

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        slow = {
            "shared": {
                "url": f"redis://127.0.0.1:{port}/0",
                "timeout": "200ms",
                "breaker_failures": 100,  # keep asking: this test is about one request
            }
        }
        proxy = await sidecache(cache=slow)
        tier = proxy.runtime.shared
        assert tier is not None
        for i, expected_errors in ((1, 1), (2, 2)):
            async with client.get(proxy.url / f"api/photo/{i}") as r:
                assert (r.status, r.headers["X-Cache"]) == (200, "MISS")
            await until_idle(proxy)
            assert tier.errors == expected_errors  # the lookup only: no lock, no write
        assert upstream.app[HITS]["total"] == 2
    finally:
        server.close()
        await server.wait_closed()


async def until_idle(proxy: Running) -> None:
    """Wait (bounded) until no fill task is running."""
    async with asyncio.timeout(10):
        while proxy.runtime.coalescer._tasks:  # noqa: ASYNC110 - no event for "all done"
            await asyncio.sleep(0.01)


async def start_replica(
    tmp_path: Path, name: str, upstream_port: int, namespace: str
) -> tuple[asyncio.subprocess.Process, str, str]:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        'control: {listen: "127.0.0.1:0"}\n'
        f'upstream: {{url: "http://127.0.0.1:{upstream_port}"}}\n'
        f'cache: {{shared: {{url: "{REDIS_URL}", namespace: "{namespace}"}}}}\n'
        "log: {access: off}\n"
        "routes:\n"
        '  - {name: gated, match: "/gated/photo/{id}", ttl: 5m}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "-c", str(config),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while not (m := LISTENING.search(line := await proc.stderr.readline())):
            assert line, "replica exited before listening"
    return proc, f"http://127.0.0.1:{int(m.group(1))}", f"http://127.0.0.1:{int(m.group(2))}"


async def test_three_replica_processes_make_one_upstream_request_and_share_purges(
    tmp_path: Path, namespace: str, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    replicas = []
    try:
        for name in ("a", "b", "c"):
            replicas.append(await start_replica(tmp_path, name, upstream.port, namespace))

        async def get(base: str, path: str) -> tuple[str, bytes]:
            async with client.get(f"{base}{path}", headers={"Host": "photos.example"}) as r:
                return r.headers["X-Cache"], await r.read()

        cold = [
            asyncio.create_task(get(base, "/gated/photo/7"))
            for _, base, _ in replicas
            for _ in range(3)
        ]
        async with asyncio.timeout(20):
            await upstream.app[ARRIVED].wait()
        upstream.app[GATE].set()
        async with asyncio.timeout(30):
            results = await asyncio.gather(*cold)
        assert all(body == photo_body("7", 1000) for _, body in results)
        assert upstream.app[HITS]["GET /gated/photo/7"] == 1  # one, across three processes
        # Every replica now answers from its own memory.
        for _, base, _ in replicas:
            assert (await get(base, "/gated/photo/7"))[0] == "HIT"
        # A purge on one replica's control port reaches the other two.
        _, _, control_a = replicas[0]
        async with client.post(f"{control_a}/purge", json={"path": "/gated/photo/7"}) as r:
            assert (await r.json())["purged"] == 1
        for _, _, control in replicas[1:]:
            async with asyncio.timeout(10):
                while True:
                    async with client.get(f"{control}/stats") as r:
                        if (await r.json())["cache"]["entries"] == 0:
                            break
                    await asyncio.sleep(0.02)  # pub/sub delivery in another process
        assert (await get(replicas[2][1], "/gated/photo/7"))[0] == "MISS"
        assert upstream.app[HITS]["GET /gated/photo/7"] == 2
    finally:
        for proc, _, _ in replicas:
            await ensure_dead(proc)


async def test_a_replica_falls_back_to_its_own_fetch_when_the_lock_holder_dies(
    namespace: str, sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    shared = {"shared": {"url": REDIS_URL, "namespace": namespace, "lock_timeout": "500ms"}}
    proxy = await sidecache(cache=shared)
    tier = proxy.runtime.shared
    assert tier is not None
    # Another replica took the fill lock for this key, then died: it never stores
    # the entry nor releases the lock; only the lease ends it.
    async with client.get(proxy.url / "api/photo/4") as r:  # learn the key shape
        await r.read()
    (stored_key,) = [k for k in proxy.runtime.store._lru if k.endswith("/api/photo/4")]
    dead_key = stored_key.replace("/api/photo/4", "/api/photo/5")
    assert await tier.lock(dead_key, "a-replica-that-died")
    async with asyncio.timeout(10):
        async with client.get(proxy.url / "api/photo/5") as r:
            assert (r.status, r.headers["X-Cache"], await r.read()) == (
                200,
                "MISS",
                photo_body("5", 1000),
            )
    assert upstream.app[HITS]["GET /api/photo/5"] == 1


async def test_a_purge_that_lands_during_a_shared_lookup_keeps_its_entry_out(
    namespace: str,
) -> None:
    clock = Clock(1000.0)
    shared = tier(namespace, clock)
    local = MemoryLRUCache(64 * 1024 * 1024, clock=clock)
    tiers = Tiers(local, shared, stats=Stats(started_at=clock.now), clock=clock)
    try:
        assert await shared.put(entry("k", clock.now))
        asking = asyncio.create_task(tiers.lookup_shared("k", "photo", "/api/photo/1"))
        await asyncio.sleep(0)  # the lookup has begun and waits for Redis's answer
        local.purge_path("/api/photo/1")  # e.g. announced by another replica
        assert await asking == (True, None)  # it may be what the purge removed
        assert local.lookup("k", clock.now) is None
        # Asked again after the purge, the entry is taken and kept in-process.
        found = await tiers.lookup_shared("k", "photo", "/api/photo/1")
        assert found.entry is not None and local.lookup("k", clock.now) is not None
    finally:
        await shared.close()


async def test_a_fill_finished_between_the_lookup_and_the_lock_is_not_fetched_again(
    namespace: str,
) -> None:
    """A replica misses in the shared tier; before it asks for the fill lock, another
    one takes the lock, stores the entry and releases it: the lock is free, and the
    entry is there. Its turn is that entry, not a second upstream request."""
    clock = Clock(1000.0)
    other, shared = tier(namespace, clock), tier(namespace, clock)
    local = MemoryLRUCache(64 * 1024 * 1024, clock=clock)
    tiers = Tiers(local, shared, stats=Stats(started_at=clock.now), clock=clock)
    try:
        assert await tiers.lookup_shared("k", "photo", "/api/photo/1") == (True, None)
        assert await other.lock("k", "token-other")  # the other replica's whole fill
        assert await other.put(entry("k", clock.now))
        await other.unlock("k", "token-other")
        token, found = await tiers.turn("k", "photo", "/api/photo/1")
        assert token is None and found is not None and found.body == BODY
        assert local.lookup("k", clock.now) is not None  # kept in-process, as a hit would be
        assert not await shared.locked("k")  # the lock taken to look is released
    finally:
        await other.close()
        await shared.close()


async def test_explain_reads_the_shared_tier_without_changing_it(
    namespace: str, sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    shared = {"shared": {"url": REDIS_URL, "namespace": namespace}}
    a, b = [await sidecache(cache=shared) for _ in range(2)]
    headers = {"Host": "photos.example"}
    async with client.get(a.url / "api/photo/1", headers=headers) as r:
        assert r.headers["X-Cache"] == "MISS"
    tier_b = b.runtime.shared
    assert tier_b is not None
    key = build_key("photo", "photos.example", "/api/photo/1")
    async with asyncio.timeout(10):
        while (await tier_b.peek(key))[1] is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the write-through follows the response: no event
    before = (b.runtime.snapshot(), b.runtime.store.figures().entries)
    params = {"url": "/api/photo/1", "h": "Host: photos.example"}
    async with client.get(b.control / "explain", params=params) as r:
        said = await r.json()
    assert said["outcome"]["x_cache"] == "HIT" and "shared tier" in said["outcome"]["why"]
    assert said["shared_tier"] == {"answered": True, "found": True}
    assert said["entry"]["tier"] == "shared"
    assert said["entry"]["key_digest"] == said["key"]["digest"] == SharedTier.hashed(key)
    after = (b.runtime.snapshot(), b.runtime.store.figures().entries)
    before[0].pop("uptime_s"), after[0].pop("uptime_s")
    assert after == before and after[1] == 0  # no counter moved, nothing kept in-process
    async with client.get(b.url / "api/photo/1", headers=headers) as r:
        assert r.headers["X-Cache"] == "HIT" and "detail=shared" in r.headers["Cache-Status"]
