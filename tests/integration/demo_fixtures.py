"""A seeded demo database, made once per test session and copied per test."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from proxy.demo.db import PoolOptions, create_schema, make_engine
from proxy.demo.seed import seed

SEEDED_PHOTOS = 3
POSTGRES_URL = os.environ.get(
    "SIDECACHE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


def require_services() -> bool:
    return os.environ.get("SIDECACHE_REQUIRE_SERVICES") == "1"


async def _seed(url: str, photos: int) -> None:
    engine = make_engine(url, PoolOptions())
    try:
        await create_schema(engine)
        await seed(engine, photos)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def seeded_db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "seeded.sqlite3"
    asyncio.run(_seed(f"sqlite:///{path}", SEEDED_PHOTOS))
    return path


@pytest.fixture
def demo_db(seeded_db_file: Path, tmp_path: Path) -> str:
    """A private copy of the seeded database: tests may write to it."""
    copy = tmp_path / "demo.sqlite3"
    shutil.copy(seeded_db_file, copy)
    return f"sqlite:///{copy}"
