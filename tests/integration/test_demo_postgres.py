"""The demo app on PostgreSQL (asyncpg): the same endpoints, a real server.

Needs PostgreSQL on 127.0.0.1:5432 (database ``test``, trust auth; override with
``SIDECACHE_TEST_POSTGRES``). Skipped when it is absent, unless
``SIDECACHE_REQUIRE_SERVICES=1`` (as in CI), where absence is a failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.demo.app import build_app
from proxy.demo.db import Base, PoolOptions, create_schema, fill_etags, make_engine, shown_url
from proxy.demo.seed import count_photos, seed
from tests.integration.demo_fixtures import POSTGRES_URL, require_services
from tests.integration.test_cli import one_line, run

pytestmark = pytest.mark.services


@pytest.fixture
async def pg_engine() -> AsyncIterator[AsyncEngine]:
    engine = make_engine(POSTGRES_URL, PoolOptions(size=5, max_overflow=5, timeout=5))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
    except (OSError, ConnectionError) as exc:
        await engine.dispose()
        if require_services():
            pytest.fail(f"PostgreSQL is required (SIDECACHE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    yield engine
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await engine.dispose()


async def test_demo_app_on_postgresql(
    pg_engine: AsyncEngine,
    aiohttp_client: Callable[
        ..., Awaitable[TestClient[aiohttp.web.Request, aiohttp.web.Application]]
    ],
) -> None:
    assert await seed(pg_engine, 2) == 2
    assert await seed(pg_engine, 2) == 0
    assert await count_photos(pg_engine) == 2
    client = await aiohttp_client(build_app(pg_engine))
    r = await client.get("/api/photo/2")
    assert r.status == 200
    assert (await r.read())[:3] == b"\xff\xd8\xff"
    assert (await client.get("/api/photo/3")).status == 404
    assert (await client.get("/api/my-photos")).status == 401
    mine = await (
        await client.get("/api/my-photos", headers={"Authorization": "Bearer demo-user-1"})
    ).json()
    assert [p["id"] for p in mine] == [1]
    listed = await (await client.get("/api/events/1/photos")).json()
    assert [p["id"] for p in listed] == [1, 2]
    assert (await client.get("/gallery/1")).status == 200


async def test_an_unknown_user_or_database_is_one_line_naming_it(pg_engine: AsyncEngine) -> None:
    base = make_url(POSTGRES_URL)
    for url in (
        base.set(username="sidecache_no_such_user", password="s3cret"),
        base.set(database="sidecache_no_such_db"),
    ):
        text = url.render_as_string(hide_password=False)
        code, _out, err = await run("upstream", "--port", "0", "--db", text)
        assert code == 1
        line = one_line(err)
        assert line.startswith(f"sidecache: cannot use the database {shown_url(text)}: ")
        assert "does not exist" in line and "s3cret" not in err


async def test_etags_on_postgresql_spare_the_blob(
    pg_engine: AsyncEngine,
    aiohttp_client: Callable[
        ..., Awaitable[TestClient[aiohttp.web.Request, aiohttp.web.Application]]
    ],
) -> None:
    # A table made before the etag column: the app adds it, --etag fills it.
    async with pg_engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.exec_driver_sql(
            "CREATE TABLE photos (id SERIAL PRIMARY KEY, event_id INTEGER, "
            "photographer_id INTEGER, user_id INTEGER, filename VARCHAR(255), "
            "content_type VARCHAR(100), photo_data BYTEA, created_at TIMESTAMPTZ)"
        )
        await conn.exec_driver_sql(
            "INSERT INTO photos (event_id, photographer_id, user_id, filename, content_type, "
            "photo_data) VALUES (1, 1, 1, 'old.jpg', 'image/jpeg', '\\xffd8ff6f6c64')"
        )
    await create_schema(pg_engine)
    assert await fill_etags(pg_engine) == 1
    assert await seed(pg_engine, 1) == 0  # not empty: not seeded
    client = await aiohttp_client(build_app(pg_engine, etag=True))
    r = await client.get("/api/photo/1")
    body = await r.read()
    assert body == b"\xff\xd8\xffold"
    tag = r.headers["ETag"]
    assert tag == f'"{hashlib.sha256(body).hexdigest()}"'
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(pg_engine.sync_engine, "before_cursor_execute", record)
    try:
        again = await client.get("/api/photo/1", headers={"If-None-Match": tag})
    finally:
        event.remove(pg_engine.sync_engine, "before_cursor_execute", record)
    assert again.status == 304 and again.headers["ETag"] == tag
    (query,) = seen
    assert "photos.etag" in query and "photo_data" not in query
    stats = await (await client.get("/_demo/stats")).json()
    assert (stats["photo_reads"], stats["etag_reads"], stats["not_modified"]) == (1, 1, 1)
