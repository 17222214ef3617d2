"""Operations: /metrics agrees with /stats, the access log, the dashboard data,
and the admin commands."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ROOT, AccessLines, Factory, Running


async def traffic(client: aiohttp.ClientSession, proxy: Running) -> None:
    for path in ("api/photo/1", "api/photo/1", "api/photo/2", "files/1", "api/photo/1?size=5"):
        async with client.get(proxy.url.join(aiohttp.client.URL("/" + path))) as r:
            await r.read()
    async with client.post(proxy.url / "api/photo/2", data=b"x") as r:
        await r.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_agree_exactly_with_stats(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    await traffic(client, proxy)
    async with client.get(proxy.control / "metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        m = samples(await r.text())
    async with client.get(proxy.control / "stats") as r:
        s = await r.json()

    def req(route: str, status: str) -> float:
        return m[("sidecache_requests_total", (("cache_status", status), ("route", route)))]

    assert req("photo", "HIT") == s["routes"]["photo"]["hits"] == 1
    assert req("photo", "MISS") == s["routes"]["photo"]["misses"] == 3
    assert req("photo", "BYPASS") == s["routes"]["photo"]["bypass"] == 1  # the POST
    assert req("", "BYPASS") == 1  # /files/1: no route
    total = {
        st: sum(
            v
            for (name, labels), v in m.items()
            if name == "sidecache_requests_total" and ("cache_status", st) in labels
        )
        for st in ("HIT", "MISS", "STALE", "BYPASS")
    }
    assert total == {
        "HIT": s["cache"]["hits"],
        "MISS": s["cache"]["misses"],
        "STALE": s["cache"]["stale"],
        "BYPASS": s["cache"]["bypass"],
    }
    up = s["upstream"]
    assert (
        m[("sidecache_upstream_requests_total", (("outcome", "ok"),))]
        == up["requests"] - up["errors"]
    )
    assert m[("sidecache_upstream_requests_total", (("outcome", "error"),))] == up["errors"]
    assert m[("sidecache_coalesced_total", ())] == up["coalesced"]
    assert m[("sidecache_upstream_retries_total", ())] == up["retries"]
    assert m[("sidecache_slow_clients_total", ())] == up["slow_clients"]
    assert m[("sidecache_cache_bytes", ())] == s["cache"]["bytes"]
    assert m[("sidecache_cache_entries", ())] == s["cache"]["entries"]
    assert m[("sidecache_cache_max_bytes", ())] == s["cache"]["max_bytes"]
    assert m[("sidecache_cache_evictions_total", (("reason", "purge"),))] == s["cache"]["purged"]
    assert m[("sidecache_response_seconds_count", (("cache_status", "HIT"),))] == 1
    assert m[("sidecache_response_seconds_count", (("cache_status", "MISS"),))] == 3
    assert m[("sidecache_upstream_seconds_count", ())] == up["requests"]
    # Bounded labels: no path, no user anywhere in the exposition.
    assert not any("/api/photo" in v for (_, labels) in m for _, v in labels)


async def test_access_log_lines(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    access: AccessLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await sidecache()
    with caplog.at_level(logging.INFO, logger="sidecache.access"):
        async with client.get(
            proxy.url.with_path("/api/photo/1").with_query(size="10", token="s3cr3t"),
            headers={"Authorization": "Bearer hunter2", "Cookie": "sid=c00kie"},
        ) as r:
            await r.read()
        await proxy.instance.stop()  # the access log is written when it stops, at the latest
    lines = access.lines
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["path"] == "/api/photo/1"
    assert line["status"] == 200 and line["cache"] == "BYPASS"  # credentials, bypass route
    assert line["route"] == "photo" and line["bytes"] == 10
    assert line["query"] == "size=10&token=REDACTED"
    assert line["duration_ms"] >= 0 and line["upstream_ms"] >= 0
    text = caplog.text + "\n".join(access.messages)
    assert "s3cr3t" not in text and "hunter2" not in text and "c00kie" not in text


@pytest.mark.parametrize("mode", ["text", "off"])
async def test_access_log_modes(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines, mode: str
) -> None:
    proxy = await sidecache(log={"access": mode})
    async with client.get(proxy.url / "api/photo/1") as r:
        await r.read()
    await proxy.instance.stop()
    lines = access.messages
    if mode == "off":
        assert lines == []
    else:
        assert len(lines) == 1 and " GET /api/photo/1 200 MISS route=photo bytes=1000 " in lines[0]


async def test_dashboard_page_and_data(sidecache: Factory, client: aiohttp.ClientSession) -> None:
    proxy = await sidecache()
    await traffic(client, proxy)
    proxy.runtime.take_sample()
    async with client.get(proxy.control / "") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        assert "http://" not in page and "https://" not in page  # nothing fetched elsewhere
        assert "/api/dashboard" in page
    async with client.get(proxy.control / "api/dashboard") as r:
        data = await r.json()
    assert data["stats"]["cache"]["hits"] == 1
    assert data["routes"][0]["route"] == "photo" and data["routes"][0]["requests"] == 5
    assert set(data["latency"]) == {"p50", "p95", "p99"}


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"},
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_admin_stats_and_purge_commands(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(control={"token": "t0ken"})
    await traffic(client, proxy)
    control = str(proxy.control)
    code, out, _ = await run_cli("stats", "--control", control, "--json")
    assert code == 0 and json.loads(out)["cache"]["hits"] == 1
    code, out, _ = await run_cli("stats", "--control", control)
    assert code == 0 and "hit rate" in out and "photo" in out
    if sys.platform.startswith("linux"):
        assert re.search(r"resident memory\W+[\d.,]+ MiB", out), out
    code, _, err = await run_cli("purge", "/api/photo/1", "--control", control)
    assert code == 1 and "401" in err  # the token is required
    code, out, _ = await run_cli("purge", "/api/photo/1", "--control", control, "--token", "t0ken")
    assert code == 0 and "purged 2 entries" in out
    async with client.get(proxy.url / "api/photo/3") as r:
        await r.read()
    code, out, _ = await run_cli(
        "purge", "--all", "--control", control, "--token", "t0ken", "--json"
    )
    assert code == 0 and json.loads(out) == {"purged": 1}
    code, _, err = await run_cli("purge", "--control", control)
    assert code == 2 and "exactly one" in err  # a bad argument, nothing sent
    code, _, err = await run_cli("stats", "--control", "http://127.0.0.1:1")
    assert code == 1 and "cannot reach" in err
