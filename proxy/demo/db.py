"""The demo database: the ``Photo`` table, the async engine and its pool.

The pool is sized like the original application's (20 + 50 overflow) and has a
timeout, so that a crowd exhausts it the way it did in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from proxy.demo import DatabaseURLError


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, index=True)
    photographer_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    photo_data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


@dataclass(frozen=True, slots=True)
class PoolOptions:
    size: int = 20
    max_overflow: int = 50
    timeout: float = 10.0


def async_url(url: str) -> str:
    """``sqlite:///path`` or ``postgresql://...`` -> the async driver's URL."""
    for plain, driver in (
        ("sqlite:///", "sqlite+aiosqlite:///"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise DatabaseURLError(
        f"{url!r} is not a database URL (e.g. 'sqlite:///demo.sqlite3' or "
        "'postgresql://user@127.0.0.1/db')"
    )


def make_engine(url: str, pool: PoolOptions) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout,
        pool_pre_ping=False,
    )


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
