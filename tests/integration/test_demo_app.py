"""The bundled demo app: endpoints, auth, seeding, and the pool running dry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from proxy.demo.app import STATE, build_app
from proxy.demo.db import PoolOptions, async_url, create_schema, make_engine, shown_url
from proxy.demo.seed import count_photos, seed
from tests.integration.conftest import free_port_that_refuses
from tests.integration.demo_fixtures import SEEDED_PHOTOS
from tests.integration.test_cli import one_line, run

ALICE = {"Authorization": "Bearer demo-user-1"}
BOB = {"Authorization": "Bearer demo-user-2"}

ClientFactory = Callable[..., Awaitable[TestClient[aiohttp.web.Request, aiohttp.web.Application]]]


@pytest.fixture
async def app_client(
    demo_db: str, aiohttp_client: ClientFactory
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    engine = make_engine(demo_db, PoolOptions())
    client = await aiohttp_client(build_app(engine))
    yield client
    await engine.dispose()


async def test_photo_is_read_from_the_database_on_every_request(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    for _ in range(3):
        r = await app_client.get("/api/photo/1")
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        body = await r.read()
        assert body[:3] == b"\xff\xd8\xff"  # a JPEG
        assert 1_900_000 < len(body) < 3_100_000
    state = app_client.app[STATE]
    assert state.photo_reads == 3 and state.bytes_read == 3 * len(body)
    stats = await (await app_client.get("/_demo/stats")).json()
    assert stats["photo_reads"] == 3 and stats["pool_timeouts"] == 0


@pytest.mark.parametrize("path", ["/api/photo/999", "/api/photo/abc", "/gallery/999"])
async def test_unknown_things_are_404(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application], path: str
) -> None:
    assert (await app_client.get(path)).status == 404


async def test_lists_gallery_and_index(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    photos = await (await app_client.get("/api/events/1/photos")).json()
    assert [p["id"] for p in photos] == list(range(1, SEEDED_PHOTOS + 1))
    assert photos[0]["url"] == "/api/photo/1" and "photo_data" not in photos[0]
    page = await (await app_client.get("/gallery/1")).text()
    assert page.count('<img loading="lazy"') == SEEDED_PHOTOS
    index = await (await app_client.get("/")).text()
    assert 'href="/gallery/1"' in index


async def test_my_photos_needs_a_user(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    for headers in ({}, {"Authorization": "Bearer nobody"}, {"Authorization": "Basic x"}):
        r = await app_client.get("/api/my-photos", headers=headers)
        assert r.status == 401
    mine = await (await app_client.get("/api/my-photos", headers=BOB)).json()
    assert [p["user_id"] for p in mine] == [2]


async def test_upload_and_delete(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    form = aiohttp.FormData()
    form.add_field("event_id", "7")
    form.add_field("photo", b"\xff\xd8\xffnew", filename="new.jpg", content_type="image/jpeg")
    assert (await app_client.post("/api/photos", data=form)).status == 401
    form = aiohttp.FormData()
    form.add_field("event_id", "7")
    form.add_field("photo", b"\xff\xd8\xffnew", filename="new.jpg", content_type="image/jpeg")
    r = await app_client.post("/api/photos", data=form, headers=ALICE)
    assert r.status == 201
    created = await r.json()
    assert created["event_id"] == 7 and created["user_id"] == 1
    assert await (await app_client.get(created["url"])).read() == b"\xff\xd8\xffnew"
    bad = aiohttp.FormData()
    bad.add_field("event_id", "x")
    assert (await app_client.post("/api/photos", data=bad, headers=ALICE)).status == 400
    assert (await app_client.delete(created["url"])).status == 401
    assert (await app_client.delete(created["url"], headers=BOB)).status == 403
    assert (await app_client.delete(created["url"], headers=ALICE)).status == 204
    assert (await app_client.delete(created["url"], headers=ALICE)).status == 404
    assert (await app_client.get(created["url"])).status == 404


async def test_an_exhausted_pool_turns_into_clean_503s_and_says_why(
    demo_db: str, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # One connection, held for a long time by the first request (db latency).
    engine = make_engine(demo_db, PoolOptions(size=1, max_overflow=0, timeout=0.2))
    client = await aiohttp_client(build_app(engine, db_latency=30.0))
    try:
        holder = asyncio.create_task(client.get("/api/photo/1"))
        async with asyncio.timeout(10):
            while engine.pool.checkedout() < 1:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="proxy.demo.app"):
            r = await client.get("/api/photo/2")
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
        assert "database pool exhausted" in await r.text()
        assert any("pool exhausted" in m and "QueuePool limit" in m for m in caplog.messages)
        assert client.app[STATE].pool_timeouts == 1
        holder.cancel()
    finally:
        await client.close()
        await engine.dispose()


async def test_seeding_is_done_once(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    engine = make_engine(url, PoolOptions())
    try:
        await create_schema(engine)
        assert await seed(engine, 2) == 2
        assert await seed(engine, 5) == 0
        assert await count_photos(engine) == 2
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///a.db", "sqlite+aiosqlite:///a.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls(url: str, expected: str) -> None:
    assert async_url(url) == expected


def test_unsupported_database_url() -> None:
    with pytest.raises(ValueError, match="is not a database URL"):
        async_url("mysql://x")


def test_database_urls_are_shown_without_their_password() -> None:
    assert shown_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert shown_url("postgresql://u:s3cret@h:bad/db") == "postgresql://u:***@h:bad/db"
    assert shown_url("sqlite:///a.db") == "sqlite:///a.db"
    with pytest.raises(ValueError, match="is not a database URL") as info:
        async_url("mysql://u:s3cret@h/db")
    assert "s3cret" not in str(info.value)


async def test_an_unusable_database_is_one_line_naming_it(tmp_path: Path) -> None:
    refused = free_port_that_refuses()
    for url in (
        f"sqlite:///{tmp_path}/no/such/dir/demo.sqlite3",
        f"postgresql://demo:s3cret@127.0.0.1:{refused}/demo",
    ):
        code, _out, err = await run("upstream", "--port", "0", "--db", url)
        assert code == 1
        line = one_line(err)
        assert line.startswith("sidecache: cannot use the database ")
        assert shown_url(url) in line and "s3cret" not in err
