"""``server.workers: 2``: real worker processes on one port, one control port for all.

Each test starts ``python -m proxy serve`` (the supervisor and its two workers)
in front of a real upstream; the public port is 0 in the config, so the
supervisor picks it and every worker binds it with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.machine import read_machine
from proxy.workers import MAX_RESTARTS
from tests.integration.conftest import ROOT, stop_gracefully
from tests.integration.test_lifecycle import PHOTO, Served, serving
from tests.integration.test_shared_tier import REDIS_URL, namespace  # noqa: F401 - a fixture
from tests.integration.upstream_app import ARRIVED, GATE, HITS

pytestmark = pytest.mark.slow  # each test starts three processes

CONFIG = """
listen: 127.0.0.1:0
control: {{listen: "127.0.0.1:0", token: "s3cret"}}
upstream: {{url: "http://127.0.0.1:{port}"}}
server: {{workers: 2, shutdown_grace: 20s}}
cache: {{max_bytes: 64MiB}}
log: {{access: "off"}}
routes:
{routes}
"""
FILES = '  - {name: files, match: "/files/{id}", ttl: 5m}'
# Enough connections that the kernel gives both workers some: 2 ** -63 that it does not.
CONNECTIONS = 64


@pytest.fixture
async def workers(tmp_path: Path, upstream: TestServer) -> AsyncIterator[tuple[Served, Path]]:
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO))
    async with serving(path) as served:
        yield served, path


async def fresh_get(url: str) -> tuple[int, str]:
    """One request on a connection of its own (the kernel picks a worker per connection)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client, client.get(url) as r:
        await r.read()
        return r.status, r.headers.get("X-Cache", "")


async def wait_line(served: Served, needle: bytes, *, after: int) -> None:
    """Wait for a log line with ``needle`` after the first ``after`` lines."""
    assert served.proc.stderr is not None
    async with asyncio.timeout(20):
        while not any(needle in line for line in served.log[after:]):
            line = await served.proc.stderr.readline()
            assert line, f"serve exited before logging {needle!r}"
            served.log.append(line)


async def control(
    served: Served, method: str, path: str, token: str = "s3cret", **kw: Any
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{served.control}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url, headers=headers, **kw) as r,
    ):
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def test_both_workers_answer_on_one_port_and_stats_add_up_exactly(
    workers: tuple[Served, Path], upstream: TestServer
) -> None:
    served, _ = workers
    base = f"http://127.0.0.1:{served.public}"
    answers = await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(CONNECTIONS)))
    assert all(status == 200 for status, _ in answers)

    status, stats = await control(served, "GET", "/stats")
    assert status == 200
    cache = stats["cache"]
    assert cache["hits"] + cache["misses"] + cache["stale"] + cache["bypass"] == CONNECTIONS
    assert cache["hits"] == sum(1 for _, x in answers if x == "HIT")
    assert cache["misses"] == sum(1 for _, x in answers if x == "MISS")
    photo = stats["routes"]["photo"]
    assert photo["hits"] + photo["misses"] == CONNECTIONS
    # Each worker has its own cache and its own share of the budget.
    assert cache["max_bytes"] == 64 * 1024**2
    assert cache["policy"] == "gdsf"  # the workers' (the default)
    assert stats["upstream"]["requests"] == upstream.app[HITS]["GET /api/photo/1"]
    assert [w["index"] for w in stats["workers"]] == [0, 1]
    assert all(w["up"] and w["requests"] > 0 for w in stats["workers"])  # both answered
    assert sum(w["requests"] for w in stats["workers"]) == CONNECTIONS
    assert len({w["pid"] for w in stats["workers"]}) == 2
    # Each worker stored the photo once: the workers' storage counts, added up.
    assert stats["storage"]["photo"] == {"stored": cache["entries"], "not_stored": {}}
    assert stats["shadow"]["routes"] == {}

    status, text = await control(served, "GET", "/metrics")
    assert status == 200
    hits = f'sidecache_requests_total{{cache_status="HIT",route="photo"}} {cache["hits"]}.0'
    assert hits in text
    assert f'sidecache_response_seconds_count{{cache_status="HIT"}} {cache["hits"]}.0' in text
    assert "sidecache_workers_up 2.0" in text
    # The storage and shadow series too, from the same added-up documents as /stats.
    assert f'sidecache_stored_total{{route="photo"}} {cache["entries"]}.0' in text
    assert "sidecache_shadow_index_entries 0.0" in text

    assert await control(served, "GET", "/readyz") == (200, "ready\n")
    assert await control(served, "GET", "/healthz") == (200, "ok\n")
    # The workers' private endpoints are not on the control port.
    assert (await control(served, "GET", "/_worker/state"))[0] == 404
    assert (await control(served, "POST", "/_worker/purge", json={}))[0] == 404
    assert await stop_gracefully(served.proc) == 0


async def test_memory_is_the_supervisor_and_its_workers_against_one_limit(
    workers: tuple[Served, Path],
) -> None:
    served, _ = workers
    status, stats = await control(served, "GET", "/stats")
    assert status == 200
    memory, each = stats["memory"], [w["rss_bytes"] for w in stats["workers"]]
    assert all(rss > 0 for rss in each)
    # One reading of every process: the total is the workers' and the supervisor's.
    supervisor = memory["rss_bytes"] - sum(each)
    assert 0 < supervisor < 256 * 1024**2
    # They all share the cgroup of the process that started them: this one's.
    assert memory["limit_bytes"] == read_machine().cgroup_limit
    if memory["limit_bytes"] is not None:
        assert memory["headroom_bytes"] == memory["limit_bytes"] - memory["rss_bytes"]
    status, text = await control(served, "GET", "/metrics")
    assert "sidecache_memory_rss_bytes " in text
    assert await stop_gracefully(served.proc) == 0


async def test_a_purge_reaches_every_worker(workers: tuple[Served, Path]) -> None:
    served, _ = workers
    base = f"http://127.0.0.1:{served.public}"
    await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(CONNECTIONS)))
    _, stats = await control(served, "GET", "/stats")
    assert [w["entries"] for w in stats["workers"]] == [1, 1]  # cached in both

    assert (await control(served, "POST", "/purge", json={"all": True}, token="no"))[0] == 401
    assert await control(served, "POST", "/purge", json={"route": "nope"}) == (
        404,
        {"error": "no route named 'nope'"},
    )
    assert await control(served, "POST", "/purge", json={"path": "/api/photo/1"}) == (
        200,
        {"purged": 2},
    )
    _, stats = await control(served, "GET", "/stats")
    assert [w["entries"] for w in stats["workers"]] == [0, 0]  # gone from both
    assert stats["cache"]["purged"] == 2
    assert await stop_gracefully(served.proc) == 0


async def test_sigterm_drains_every_worker_and_exits_0(
    workers: tuple[Served, Path], upstream: TestServer
) -> None:
    served, _ = workers
    base = f"http://127.0.0.1:{served.public}"
    async with aiohttp.ClientSession() as client:
        in_flight = asyncio.create_task(client.get(f"{base}/gated/photo/1"))
        async with asyncio.timeout(20):
            await upstream.app[ARRIVED].wait()
        served.proc.send_signal(signal.SIGTERM)
        await served.wait_log(b"stopping: 2 workers finish their in-flight requests")
        await served.wait_log(b"worker 0 proxy.server: stopping: finishing in-flight requests")
        await served.wait_log(b"worker 1 proxy.server: stopping: finishing in-flight requests")
        status, text = await control(served, "GET", "/readyz")
        assert (status, text) == (503, "draining\n")
        with pytest.raises(aiohttp.ClientConnectionError):
            await fresh_get(f"{base}/api/photo/2")  # no worker accepts any more
        upstream.app[GATE].set()
        async with asyncio.timeout(20):
            r = await in_flight
            assert r.status == 200
            assert len(await r.read()) == 1000
        async with asyncio.timeout(30):
            assert await served.proc.wait() == 0
    assert upstream.app[HITS]["GET /api/photo/2"] == 0


async def test_a_killed_worker_is_started_again(workers: tuple[Served, Path]) -> None:
    served, _ = workers
    base = f"http://127.0.0.1:{served.public}"
    before = await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(CONNECTIONS)))
    _, stats = await control(served, "GET", "/stats")
    assert all(w["requests"] > 0 for w in stats["workers"])  # both counted some
    counted = stats["cache"]
    killed = stats["workers"][0]["pid"]
    os.kill(killed, signal.SIGKILL)
    await served.wait_log(b"worker 0 exited with code -9: starting it again")
    await wait_line(served, b"worker 0 listening (pid ", after=len(served.log))
    _, stats = await control(served, "GET", "/stats")
    assert stats["workers"][0]["up"] and stats["workers"][0]["pid"] != killed
    assert await control(served, "GET", "/readyz") == (200, "ready\n")
    answers = await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(8)))
    assert all(status == 200 for status, _ in answers)
    # What the killed worker had counted stays in the totals: they never go down.
    _, stats = await control(served, "GET", "/stats")
    cache = stats["cache"]
    assert cache["hits"] + cache["misses"] == len(before) + len(answers)
    assert cache["hits"] >= counted["hits"] and cache["misses"] >= counted["misses"]
    photo = stats["routes"]["photo"]
    assert photo["hits"] + photo["misses"] == len(before) + len(answers)
    _, text = await control(served, "GET", "/metrics")
    assert "sidecache_worker_restarts_total 1.0" in text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sidecache_requests_total{")
    )
    assert total == len(before) + len(answers)
    assert await stop_gracefully(served.proc) == 0


async def test_a_worker_started_again_runs_the_config_in_force_not_an_unreloaded_edit(
    workers: tuple[Served, Path], upstream: TestServer
) -> None:
    """The file edited (a new route) but not reloaded, then half written: a worker
    started again in the meantime runs what the others run."""
    served, path = workers
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO + "\n" + FILES))
    _, stats = await control(served, "GET", "/stats")
    os.kill(stats["workers"][0]["pid"], signal.SIGKILL)
    await served.wait_log(b"worker 0 exited with code -9: starting it again")
    await wait_line(served, b"worker 0 listening (pid ", after=len(served.log))
    base = f"http://127.0.0.1:{served.public}"
    answers = await asyncio.gather(*(fresh_get(f"{base}/files/1") for _ in range(CONNECTIONS)))
    # No worker has the route that was never reloaded: every answer passes by.
    assert {x for _, x in answers} == {"BYPASS"}
    assert upstream.app[HITS]["GET /files/1"] == CONNECTIONS

    path.write_text("routes: [")  # a broken save: a restart must not read it
    _, stats = await control(served, "GET", "/stats")
    os.kill(stats["workers"][1]["pid"], signal.SIGKILL)
    await served.wait_log(b"worker 1 exited with code -9: starting it again")
    await wait_line(served, b"worker 1 listening (pid ", after=len(served.log))
    assert await control(served, "GET", "/readyz") == (200, "ready\n")
    assert await stop_gracefully(served.proc) == 0


async def test_a_worker_started_again_keeps_the_policy_the_others_run(
    tmp_path: Path, upstream: TestServer
) -> None:
    """cache.policy takes effect on restart of the whole: a worker started again
    after a reload that changed it runs the policy of the others, not the new one."""
    path = tmp_path / "sidecache.yaml"
    lru = CONFIG.format(port=upstream.port, routes=PHOTO).replace(
        "max_bytes: 64MiB", "max_bytes: 64MiB, policy: lru"
    )
    path.write_text(lru)
    async with serving(path) as served:
        _, stats = await control(served, "GET", "/stats")
        assert [w["policy"] for w in stats["workers"]] == ["lru", "lru"]
        path.write_text(lru.replace("policy: lru", "policy: s3fifo"))
        served.proc.send_signal(signal.SIGHUP)
        await served.wait_log(b"cache.policy changed in the config: it takes effect on restart")
        await served.wait_log(b"worker 1 proxy.server: config reloaded")
        os.kill(stats["workers"][0]["pid"], signal.SIGKILL)
        await served.wait_log(b"worker 0 exited with code -9: starting it again")
        await wait_line(served, b"worker 0 listening (pid ", after=len(served.log))
        _, stats = await control(served, "GET", "/stats")
        assert [w["policy"] for w in stats["workers"]] == ["lru", "lru"]
        assert stats["cache"]["policy"] == "lru"
        assert await stop_gracefully(served.proc) == 0


async def test_sighup_reloads_every_worker(
    workers: tuple[Served, Path], upstream: TestServer
) -> None:
    served, path = workers
    path.write_text(CONFIG.format(port=upstream.port, routes=PHOTO + "\n" + FILES))
    served.proc.send_signal(signal.SIGHUP)
    await served.wait_log(b"worker 0 proxy.server: config reloaded: 2 routes")
    await served.wait_log(b"worker 1 proxy.server: config reloaded: 2 routes")
    base = f"http://127.0.0.1:{served.public}"
    answers = await asyncio.gather(*(fresh_get(f"{base}/files/1") for _ in range(CONNECTIONS)))
    assert {x for _, x in answers} <= {"MISS", "HIT"}  # the new route, in every worker
    path.write_text("routes: [oops")
    served.proc.send_signal(signal.SIGHUP)
    await served.wait_log(b"reload failed, keeping the current config")
    assert await stop_gracefully(served.proc) == 0


async def test_a_worker_that_keeps_dying_stops_everything_with_a_non_zero_exit(
    workers: tuple[Served, Path],
) -> None:
    served, _ = workers
    for restart in range(MAX_RESTARTS + 1):
        at = len(served.log)
        _, stats = await control(served, "GET", "/stats")
        os.kill(stats["workers"][1]["pid"], signal.SIGKILL)
        if restart < MAX_RESTARTS:
            await wait_line(served, b"worker 1 listening (pid ", after=at)
    await served.wait_log(b"giving up, stopping the others")
    async with asyncio.timeout(30):
        assert await served.proc.wait() == 1


@pytest.mark.services
async def test_with_the_shared_tier_one_workers_fill_serves_the_other(
    tmp_path: Path,
    upstream: TestServer,
    namespace: str,  # noqa: F811 - the fixture
) -> None:
    path = tmp_path / "sidecache.yaml"
    text = CONFIG.format(port=upstream.port, routes=PHOTO)
    shared = f'{{max_bytes: 64MiB, shared: {{url: "{REDIS_URL}", namespace: "{namespace}"}}}}'
    path.write_text(text.replace("{max_bytes: 64MiB}", shared))
    async with serving(path) as served:
        base = f"http://127.0.0.1:{served.public}"
        assert await fresh_get(f"{base}/api/photo/1") == (200, "MISS")
        await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(CONNECTIONS)))
        assert upstream.app[HITS]["GET /api/photo/1"] == 1  # one fill for both workers
        _, stats = await control(served, "GET", "/stats")
        assert stats["shared"]["served"] >= 1  # the other worker took it from the tier
        assert [w["entries"] for w in stats["workers"]] == [1, 1]
        assert await control(served, "POST", "/purge", json={"all": True}) == (
            200,
            {"purged": 2},
        )
        assert await fresh_get(f"{base}/api/photo/1") == (200, "MISS")  # gone from Redis too
        assert upstream.app[HITS]["GET /api/photo/1"] == 2
        assert await stop_gracefully(served.proc) == 0


async def test_a_public_port_taken_by_another_program_is_a_clear_error(
    tmp_path: Path, upstream: TestServer
) -> None:
    path = tmp_path / "sidecache.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(
            CONFIG.format(port=upstream.port, routes=PHOTO).replace(
                "listen: 127.0.0.1:0", f"listen: 127.0.0.1:{port}"
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "serve", "-c", str(path),
            cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().strip().splitlines()[-1] == "sidecache: Address already in use"


async def test_explain_asks_every_worker(workers: tuple[Served, Path]) -> None:
    served, _ = workers
    base = f"http://127.0.0.1:{served.public}"
    await asyncio.gather(*(fresh_get(f"{base}/api/photo/1") for _ in range(CONNECTIONS)))
    host = f"h=Host:127.0.0.1:{served.public}"
    assert (await control(served, "GET", f"/explain?url=/api/photo/1&{host}", token="no"))[0] == 401
    assert (await control(served, "GET", "/explain?h=X"))[0] == 400
    # Each worker's unauthenticated one is on its private socket only.
    assert (await control(served, "GET", f"/_worker/explain?url=/api/photo/1&{host}"))[0] == 404
    status, said = await control(served, "GET", f"/explain?url=/api/photo/1&{host}")
    assert status == 200
    assert said["route"]["name"] == "photo" and said["decision"]["action"] == "lookup"
    assert said["outcome"]["x_cache"] == "HIT"  # cached in both
    assert [(w["index"], w["outcome"]["x_cache"]) for w in said["workers"]] == [
        (0, "HIT"),
        (1, "HIT"),
    ]
    assert all(w["entry"]["key_digest"] == said["key"]["digest"] for w in said["workers"])
    _, cold = await control(served, "GET", f"/explain?url=/api/photo/2&{host}")
    assert cold["outcome"]["step"] == "fetch"
    assert [w["entry"] for w in cold["workers"]] == [None, None]
    assert await stop_gracefully(served.proc) == 0
