"""End to end in a real browser (Debian's Chromium, headless, through Playwright):
the dashboard while traffic flows, and the demo gallery scrolled through sidecache.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from proxy.demo.run import DemoOptions, UpstreamOptions, start_demo
from tests.integration.conftest import ROOT, Factory
from tests.integration.demo_fixtures import _seed

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARTIFACTS = ROOT / "test-artifacts"
# What the machine's network allows: no background traffic to Google's hosts.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GALLERY_PHOTOS = 12


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not HAVE_CHROMIUM:
        if os.environ.get("SIDECACHE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Chromium is required for the browser tests ({CHROMIUM} missing)")
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def test_dashboard_shows_what_stats_says(
    browser: object, sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()

    async def traffic() -> None:
        for i in range(300):  # bounded
            async with client.get(proxy.url / f"api/photo/{i % 7}") as r:
                await r.read()
            if i % 50 == 0:
                await asyncio.sleep(0.05)  # spread over a few dashboard refreshes

    # The dashboard's CSP forbids eval; Playwright's waits evaluate strings.
    context = await browser.new_context(bypass_csp=True)  # type: ignore[attr-defined]
    page = await context.new_page()
    await page.goto(str(proxy.control / ""))
    flowing = asyncio.create_task(traffic())
    await page.wait_for_function("document.body.dataset.updated !== undefined", timeout=10_000)
    await flowing
    # Traffic has stopped: wait for a refresh that started after it, then compare.
    before = await page.evaluate("document.body.dataset.updated")
    await page.wait_for_function(f"document.body.dataset.updated > '{before}'", timeout=10_000)
    async with client.get(proxy.control / "stats") as r:
        stats = await r.json()
    shown = await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('[data-value]')]
            .map((e) => [e.id, Number(e.dataset.value)]))"""
    )
    cache, upstream = stats["cache"], stats["upstream"]
    assert shown["hits"] == cache["hits"] == 293
    assert shown["misses"] == cache["misses"] == 7
    assert shown["hit-rate"] == cache["hit_rate"]
    assert shown["entries"] == cache["entries"]
    assert shown["bytes"] == cache["bytes"]
    assert shown["max-bytes"] == cache["max_bytes"]
    assert shown["upstream-requests"] == upstream["requests"]
    assert shown["upstream-errors"] == upstream["errors"] == 0
    assert await page.locator('#routes tr[data-route="photo"]').count() == 1
    assert await page.locator("#policy").text_content() == cache["policy"] == "gdsf"
    memory = stats["memory"]
    # Resident memory moves between two reads: the same order of size, not equal.
    assert 0.5 * memory["rss_bytes"] <= shown["rss"] <= 2 * memory["rss_bytes"]
    limit = await page.locator("#memory-limit").text_content()
    if memory["limit_bytes"] is None:
        assert limit == "no container limit"
    else:
        assert limit is not None and limit.startswith("of a ") and limit.endswith(" left")
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


@pytest.fixture
def gallery_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gallery") / "gallery.sqlite3"
    asyncio.run(_seed(f"sqlite:///{path}", GALLERY_PHOTOS))
    return f"sqlite:///{path}"


async def scroll_gallery(browser: object, url: str, name: str) -> list[str]:
    """Open the gallery in a fresh context, scroll to the end, return the photos' X-Cache."""
    context = await browser.new_context(viewport={"width": 900, "height": 700})  # type: ignore[attr-defined]
    page = await context.new_page()
    seen: list[str] = []
    page.on(
        "response",
        lambda r: seen.append(r.headers.get("x-cache", "")) if "/api/photo/" in r.url else None,
    )
    await page.goto(url)
    height = await page.evaluate("document.body.scrollHeight")
    for y in range(0, height + 700, 350):  # scroll down like a reader, lazy images load
        await page.evaluate(f"window.scrollTo(0, {y})")
        await page.wait_for_timeout(50)
    await page.wait_for_function(
        "[...document.images].every((i) => i.complete && i.naturalWidth > 0)", timeout=30_000
    )
    widths = await page.evaluate("[...document.images].map((i) => i.naturalWidth)")
    assert len(widths) == GALLERY_PHOTOS and all(w > 0 for w in widths)
    await page.screenshot(path=str(ARTIFACTS / name))
    await context.close()
    return seen


async def test_the_gallery_loads_every_image_through_sidecache(
    browser: object, gallery_db: str
) -> None:
    app, proxy = await start_demo(
        DemoOptions(app=UpstreamOptions(port=0, db=gallery_db), port=0, control_port=0)
    )
    try:
        url = f"http://127.0.0.1:{proxy.public_port}/gallery/1"
        first = await scroll_gallery(browser, url, "gallery-first-visit.png")
        second = await scroll_gallery(browser, url, "gallery-second-visit.png")
        assert sorted(first) == ["MISS"] * GALLERY_PHOTOS  # every photo fetched once
        assert sorted(second) == ["HIT"] * GALLERY_PHOTOS  # another visitor: all from the cache
        assert proxy.runtime is not None
        photo = proxy.runtime.snapshot()["routes"]["photo"]  # type: ignore[index]
        assert (photo["misses"], photo["hits"]) == (GALLERY_PHOTOS, GALLERY_PHOTOS)
    finally:
        await proxy.stop(grace=1)
        await app.stop()
