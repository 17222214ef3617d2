"""``sidecache demo`` and ``sidecache loadtest``: the whole story, end to end."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console

from proxy.config import load_config
from proxy.demo.run import DEMO_ROUTES, DemoOptions, UpstreamOptions, demo_banner, start_demo
from proxy.loadtest.crowd import LoadOptions
from proxy.loadtest.run import Target, run_loadtest
from proxy.loadtest.scenario import SCREENFUL
from tests.integration.conftest import ensure_dead, free_port_that_refuses, stop_gracefully
from tests.integration.demo_fixtures import SEEDED_PHOTOS

ROOT = Path(__file__).resolve().parents[2]


def demo_options(db: str, *, etag: bool = False) -> DemoOptions:
    return DemoOptions(
        app=UpstreamOptions(port=0, db=db, photos=0, etag=etag), port=0, control_port=0
    )


def test_demo_routes_are_the_default_config_routes() -> None:
    shipped = load_config(ROOT / "config" / "sidecache.yaml", environ={}).routes
    from proxy.config import parse_config

    embedded = parse_config(
        {"upstream": {"url": "http://127.0.0.1:1"}, "routes": DEMO_ROUTES}, environ={}
    ).routes
    assert embedded == shipped


async def test_demo_serves_the_gallery_through_sidecache(demo_db: str) -> None:
    app, proxy = await start_demo(demo_options(demo_db))
    try:
        banner = demo_banner(app, proxy, "127.0.0.1")
        assert f"http://127.0.0.1:{proxy.public_port}/gallery/1" in banner
        assert f"http://127.0.0.1:{app.port}/gallery/1" in banner
        assert f"http://127.0.0.1:{proxy.control_port}/stats" in banner
        base = f"http://127.0.0.1:{proxy.public_port}"
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{base}/gallery/1") as r:
                page = await r.text()
                assert r.headers["X-Cache"] == "BYPASS"
            images = re.findall(r'src="([^"]+)"', page)
            assert len(images) == SEEDED_PHOTOS
            for expected in ("MISS", "HIT"):
                for src in images:
                    async with client.get(base + src) as r:
                        assert r.status == 200
                        assert r.headers["X-Cache"] == expected
                        assert r.headers["Cache-Control"] == "public, max-age=86400, immutable"
                        assert len(await r.read()) > 1_900_000
        assert proxy.runtime is not None
        assert proxy.runtime.snapshot()["upstream"]["requests"] == SEEDED_PHOTOS + 1  # type: ignore[index]
    finally:
        await proxy.stop(grace=1)
        await app.stop()


async def test_loadtest_report_matches_what_the_target_counted(
    demo_db: str, tmp_path: Path
) -> None:
    app, proxy = await start_demo(demo_options(demo_db))
    try:
        control = f"http://127.0.0.1:{proxy.control_port}"
        options = LoadOptions(
            users=4, duration=20, images_per_second=200, max_requests=60, ramp_up=0.1, timeout=10
        )
        out = io.StringIO()
        (result,) = await run_loadtest(
            [Target("sidecache", f"http://127.0.0.1:{proxy.public_port}", control)],
            options,
            app_stats=f"http://127.0.0.1:{app.port}/_demo/stats",
            report=tmp_path / "report",
            show_progress=False,
            console=Console(file=out, width=200),
        )
        assert proxy.runtime is not None
        stats = proxy.runtime.snapshot()
        cache = stats["cache"]
        assert isinstance(cache, dict)
        rec = result.recorder
        assert 60 <= rec.requests < 60 + 4 * 6  # bounded: stops after the 60th request
        assert rec.error_count == 0
        # Every request the crowd made, the proxy saw, and the other way round.
        assert rec.requests == cache["hits"] + cache["misses"] + cache["bypass"]
        assert rec.x_cache["HIT"] == cache["hits"]
        assert rec.x_cache["MISS"] == cache["misses"]
        assert rec.x_cache["BYPASS"] == cache["bypass"]
        assert result.upstream is not None and result.app is not None
        assert result.upstream["requests"] == stats["upstream"]["requests"]  # type: ignore[index]
        # The database read each photo once: the rest came from the cache.
        assert result.app["photo_reads"] == SEEDED_PHOTOS
        # The original app sends no validators: no revalidation rows of zeros.
        assert result.app_etag is False
        assert "fills answered 304" not in out.getvalue()
        assert "photo reads from the database" in out.getvalue()
        saved = json.loads((tmp_path / "report.json").read_text())
        assert saved[0]["requests"] == rec.requests
        assert saved[0]["x_cache"]["HIT"] == cache["hits"]
        assert saved[0]["app"]["photo_reads"] == SEEDED_PHOTOS
        assert sum(p["requests"] for p in saved[0]["series"]) == rec.requests
        chart = (tmp_path / "report.html").read_text()
        assert chart.count("<svg") == 2 and "<script" not in chart and "http" in chart
    finally:
        await proxy.stop(grace=1)
        await app.stop()


async def test_loadtest_reports_revalidations_when_the_app_sends_etags(
    demo_db: str, tmp_path: Path
) -> None:
    app, proxy = await start_demo(demo_options(demo_db, etag=True))
    try:
        base = f"http://127.0.0.1:{proxy.public_port}"
        async with aiohttp.ClientSession() as client, client.get(f"{base}/api/photo/1") as r:
            assert r.headers["ETag"].startswith('"')  # the demo app's tag, through sidecache
            await r.read()
        out = io.StringIO()
        (result,) = await run_loadtest(
            [Target("sidecache", base, f"http://127.0.0.1:{proxy.control_port}")],
            LoadOptions(users=2, duration=20, max_requests=20, ramp_up=0.1, timeout=10),
            app_stats=f"http://127.0.0.1:{app.port}/_demo/stats",
            report=tmp_path / "report",
            show_progress=False,
            console=Console(file=out, width=200),
        )
        assert proxy.runtime is not None
        upstream = proxy.runtime.snapshot()["upstream"]
        assert isinstance(upstream, dict)
    finally:
        await proxy.stop(grace=1)
        await app.stop()
    assert result.app_etag is True
    assert result.upstream is not None and result.app is not None
    # Read from sidecache's /stats and the app's /_demo/stats (the run's deltas;
    # nothing is stale within it, so both are what the whole life of the proxy says).
    assert result.upstream["revalidations"] == upstream["revalidations"]
    assert result.upstream["revalidated"] == upstream["revalidated"]
    assert result.app["etag_reads"] == result.app["not_modified"] == 0
    table = out.getvalue()
    for label in ("fills sent conditional", "fills answered 304", "etag-only reads"):
        assert label in table
    saved = json.loads((tmp_path / "report.json").read_text())[0]
    assert saved["app_etag"] is True
    assert saved["upstream"]["revalidated"] == upstream["revalidated"]
    assert saved["app"]["not_modified"] == 0


async def test_loadtest_says_when_the_control_port_cannot_be_read(
    demo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, proxy = await start_demo(demo_options(demo_db))
    unreachable = f"http://127.0.0.1:{free_port_that_refuses()}"
    try:
        out = io.StringIO()
        (result,) = await run_loadtest(
            [Target("sidecache", f"http://127.0.0.1:{proxy.public_port}", unreachable)],
            LoadOptions(users=1, duration=20, max_requests=5, ramp_up=0.1, timeout=10),
            report=tmp_path / "report",
            show_progress=False,
            console=Console(file=out, width=200),
        )
    finally:
        await proxy.stop(grace=1)
        await app.stop()
    assert result.upstream is None
    (note,) = result.notes
    assert f"cannot read {unreachable}/stats" in note and "--control" in note
    assert f"sidecache loadtest: {note}" in capsys.readouterr().err
    assert "cannot read" in out.getvalue()  # the table says so too
    assert json.loads((tmp_path / "report.json").read_text())[0]["notes"] == [note]
    assert "cannot read" in (tmp_path / "report.html").read_text()


def empty_gallery_app(seen: list[str]) -> web.Application:
    """A gallery page without a single image, and a JSON document that is not /_demo/stats."""

    async def gallery(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="<html><h1>Event 1</h1><p>No photos yet.</p></html>")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": "1.2.3"})

    app = web.Application()
    app.router.add_get("/gallery/1", gallery)
    app.router.add_get("/health", health)
    return app


async def test_loadtest_keeps_to_the_rate_on_a_gallery_without_images(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]], tmp_path: Path
) -> None:
    seen: list[str] = []
    server = await aiohttp_server(empty_gallery_app(seen))
    users, duration, rate = 2, 1.0, 4.0
    (result,) = await run_loadtest(
        [Target("app", str(server.make_url("/")))],
        LoadOptions(
            users=users,
            duration=duration,
            images_per_second=rate,
            ramp_up=0,
            timeout=10,
            galleries=("/gallery/1",),
        ),
        report=tmp_path / "report",
        show_progress=False,
        console=Console(file=io.StringIO()),
    )
    # A user reads an empty page for at least half a screenful's time at --rate,
    # so each loads it at most 1 + duration / that often; twice that is plenty.
    shortest_visit = 0.5 * SCREENFUL / rate
    assert 1 <= len(seen) <= 2 * users * (1 + duration / shortest_visit)
    assert result.recorder.requests == len(seen)
    (note,) = result.notes
    assert "no images" in note and "/gallery/1" in note
    assert json.loads((tmp_path / "report.json").read_text())[0]["notes"] == [note]


async def test_loadtest_says_when_app_stats_is_not_the_demo_apps(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await aiohttp_server(empty_gallery_app([]))
    health = str(server.make_url("/health"))
    out = io.StringIO()
    (result,) = await run_loadtest(
        [Target("app", str(server.make_url("/")))],
        LoadOptions(users=1, duration=0.5, ramp_up=0, timeout=10, galleries=("/gallery/1",)),
        app_stats=health,
        report=tmp_path / "report",
        show_progress=False,
        console=Console(file=out, width=200),
    )
    assert result.app is None
    (note,) = [n for n in result.notes if "--app-stats" in n]
    assert f"{health} has none of the expected figures (photo_reads" in note
    assert f"sidecache loadtest: {note}" in capsys.readouterr().err
    assert "none of the expected figures" in out.getvalue()  # the table says so too
    saved = json.loads((tmp_path / "report.json").read_text())[0]
    assert saved["app"] is None and note in saved["notes"]


async def _banner(proc: asyncio.subprocess.Process) -> str:
    """What ``sidecache demo`` prints up to its "Ctrl-C" line (bounded)."""
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not any("Ctrl-C" in line for line in lines):
            line = (await proc.stdout.readline()).decode()
            assert line, "demo exited before it was ready"
            lines.append(line)
    return "".join(lines)


@pytest.mark.slow
async def test_demo_command_starts_both_and_stops_on_ctrl_c(demo_db: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo", "--db", demo_db,
        "--app-port", "0", "--port", "0", "--control-port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        text = await _banner(proc)
        through = re.search(r"through sidecache\s+(\S+)", text)
        direct = re.search(r"direct \(no cache\)\s+(\S+)", text)
        stats = re.search(r"sidecache stats\s+(\S+)", text)
        assert through and direct and stats, text
        async with aiohttp.ClientSession() as client:
            for url in (through.group(1), direct.group(1), stats.group(1)):
                async with client.get(url) as r:
                    assert r.status == 200, url
        assert await stop_gracefully(proc, signal.SIGINT) == 0
    finally:
        await ensure_dead(proc)


@pytest.mark.slow
@pytest.mark.parametrize("etag", [False, True])
async def test_demo_and_upstream_commands_take_etag(demo_db: str, etag: bool) -> None:
    flag = ["--etag"] if etag else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo", "--db", demo_db, *flag,
        "--app-port", "0", "--port", "0", "--control-port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        direct = re.search(r"direct \(no cache\)\s+(http://[^/]+)/", await _banner(proc))
        assert direct
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{direct.group(1)}/api/photo/1") as r:
                tag = r.headers.get("ETag")
                await r.read()
            assert (tag is not None) == etag
            async with client.get(
                f"{direct.group(1)}/api/photo/1", headers={"If-None-Match": tag or "*"}
            ) as r:
                assert r.status == (304 if etag else 200)
        assert await stop_gracefully(proc, signal.SIGINT) == 0
    finally:
        await ensure_dead(proc)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "upstream", "--db", demo_db, *flag, "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("demo app on http://"), line
        assert ("photo ETags" in line) == etag
        assert await stop_gracefully(proc, signal.SIGINT) == 0
    finally:
        await ensure_dead(proc)


@pytest.mark.slow
async def test_demo_command_binds_app_and_proxy_to_host(demo_db: str) -> None:
    host = "127.0.0.2"  # loopback, but not the default: proves the flag is used
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo", "--db", demo_db, "--host", host,
        "--app-port", "0", "--port", "0", "--control-port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        text = await _banner(proc)
        through = re.search(r"through sidecache\s+http://([^:]+):(\d+)/", text)
        direct = re.search(r"direct \(no cache\)\s+http://([^:]+):(\d+)/", text)
        stats = re.search(r"sidecache stats\s+http://([^:]+):(\d+)/", text)
        assert through and direct and stats, text
        assert through.group(1) == direct.group(1) == host
        assert stats.group(1) == "127.0.0.1"
        async with aiohttp.ClientSession() as client:
            for m in (through, direct):
                async with client.get(f"http://{host}:{m.group(2)}/gallery/1") as r:
                    assert r.status == 200
        assert await stop_gracefully(proc, signal.SIGINT) == 0
    finally:
        await ensure_dead(proc)


@pytest.mark.slow
async def test_loadtest_command_compares_two_targets(demo_db: str, tmp_path: Path) -> None:
    app, proxy = await start_demo(demo_options(demo_db))
    try:
        report = tmp_path / "cmp"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "loadtest",
            f"http://127.0.0.1:{proxy.public_port}",
            "--compare", f"http://127.0.0.1:{app.port}",
            "--control", f"http://127.0.0.1:{proxy.control_port}",
            "--users", "2", "--duration", "2s", "--rate", "20", "--no-progress",
            "--report", str(report),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "sidecache" in out.decode() and "compare" in out.decode()
        saved = json.loads(report.with_suffix(".json").read_text())
        assert [t["name"] for t in saved] == ["sidecache", "compare"]
        assert saved[0]["hit_rate"] > 0 and saved[1]["hit_rate"] is None
        assert all(t["requests"] > 0 and t["errors"] == 0 for t in saved)
    finally:
        await proxy.stop(grace=1)
        await app.stop()
