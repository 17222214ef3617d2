"""The bundled demo app: endpoints, auth, seeding, the pool running dry, and ETags."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.demo.app import STATE, build_app
from proxy.demo.db import PoolOptions, async_url, create_schema, make_engine, shown_url
from proxy.demo.run import UpstreamOptions, start_upstream
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


@pytest.fixture
async def etag_client(
    demo_db: str, aiohttp_client: ClientFactory
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    engine = make_engine(demo_db, PoolOptions())
    client = await aiohttp_client(build_app(engine, etag=True))
    yield client
    await engine.dispose()


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` sends to the database meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def quoted_sha256(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


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


async def test_without_etag_photos_have_no_validator_and_conditions_are_ignored(
    app_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    first = await app_client.get("/api/photo/1")
    body = await first.read()
    assert "ETag" not in first.headers and "Cache-Control" not in first.headers
    engine = app_client.app[STATE].engine
    for tag in (quoted_sha256(body), "*"):
        with statements(engine) as sql:
            r = await app_client.get("/api/photo/1", headers={"If-None-Match": tag})
            assert r.status == 200 and await r.read() == body
        assert "ETag" not in r.headers
        assert any("photo_data" in q for q in sql), sql  # the blob was read, as the original
    state = app_client.app[STATE]
    assert (state.photo_reads, state.etag_reads, state.not_modified) == (3, 0, 0)
    stats = await (await app_client.get("/_demo/stats")).json()
    assert stats["etag"] is False and stats["etag_reads"] == stats["not_modified"] == 0


async def test_with_etag_a_matching_if_none_match_is_answered_304_without_the_blob(
    etag_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    first = await etag_client.get("/api/photo/1")
    body = await first.read()
    tag = first.headers["ETag"]
    assert tag == quoted_sha256(body)  # strong, and changes with the bytes
    assert "Cache-Control" not in first.headers  # freshness stays the cache's to decide
    engine = etag_client.app[STATE].engine
    for condition in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        with statements(engine) as sql:
            r = await etag_client.get("/api/photo/1", headers={"If-None-Match": condition})
            assert r.status == 304, condition
            assert await r.read() == b""
        assert r.headers["ETag"] == tag
        (query,) = sql
        assert "photos.etag" in query and "photo_data" not in query
    stats = await (await etag_client.get("/_demo/stats")).json()
    assert stats["etag"] is True
    assert (stats["photo_reads"], stats["etag_reads"], stats["not_modified"]) == (1, 4, 4)
    assert stats["bytes_read"] == len(body)


async def test_with_etag_another_tag_gets_the_photo_and_an_unknown_one_404(
    etag_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    with statements(etag_client.app[STATE].engine) as sql:
        r = await etag_client.get("/api/photo/2", headers={"If-None-Match": '"stale"'})
        assert r.status == 200
        body = await r.read()
    assert r.headers["ETag"] == quoted_sha256(body)
    assert len(sql) == 2 and "photo_data" not in sql[0] and "photo_data" in sql[1]
    missing = await etag_client.get("/api/photo/999", headers={"If-None-Match": "*"})
    assert missing.status == 404
    unparsable = await etag_client.get("/api/photo/2", headers={"If-None-Match": "no-quotes"})
    assert unparsable.status == 200 and await unparsable.read() == body
    state = etag_client.app[STATE]
    assert (state.photo_reads, state.etag_reads, state.not_modified) == (2, 1, 0)


async def test_with_etag_an_upload_gets_the_etag_of_its_bytes(
    etag_client: TestClient[aiohttp.web.Request, aiohttp.web.Application],
) -> None:
    form = aiohttp.FormData()
    form.add_field("event_id", "7")
    form.add_field("photo", b"\xff\xd8\xffnew", filename="new.jpg", content_type="image/jpeg")
    created = await (await etag_client.post("/api/photos", data=form, headers=ALICE)).json()
    tag = quoted_sha256(b"\xff\xd8\xffnew")
    assert (await etag_client.get(created["url"])).headers["ETag"] == tag
    r = await etag_client.get(created["url"], headers={"If-None-Match": tag})
    assert r.status == 304


def old_database(path: Path, blob: bytes) -> str:
    """A database made before photos had an ``etag`` column, with one photo."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE photos (id INTEGER PRIMARY KEY, event_id INTEGER, "
            "photographer_id INTEGER, user_id INTEGER, filename VARCHAR(255), "
            "content_type VARCHAR(100), photo_data BLOB, created_at DATETIME)"
        )
        db.execute(
            "INSERT INTO photos VALUES (1, 1, 1, 1, 'old.jpg', 'image/jpeg', ?, NULL)", (blob,)
        )
    db.close()
    return f"sqlite:///{path}"


async def test_a_database_made_before_etags_gets_the_column_and_then_the_tags(
    tmp_path: Path,
) -> None:
    blob = b"\xff\xd8\xffold"
    db = old_database(tmp_path / "old.sqlite3", blob)
    async with aiohttp.ClientSession() as client:
        for etag in (False, True):
            app = await start_upstream(UpstreamOptions(port=0, db=db, etag=etag))
            try:
                url = f"http://127.0.0.1:{app.port}/api/photo/1"
                async with client.get(url) as r:
                    assert r.status == 200 and await r.read() == blob
                    assert r.headers.get("ETag") == (quoted_sha256(blob) if etag else None)
                async with client.get(url, headers={"If-None-Match": quoted_sha256(blob)}) as r:
                    assert r.status == (304 if etag else 200)
            finally:
                await app.stop()
    with sqlite3.connect(tmp_path / "old.sqlite3") as db_file:
        (stored,) = db_file.execute("SELECT etag FROM photos").fetchone()
    db_file.close()
    assert f'"{stored}"' == quoted_sha256(blob)
