"""The demo database: the ``Photo`` table, the async engine and its pool.

The pool is sized like the original application's (20 + 50 overflow) and has a
timeout, so that a crowd exhausts it the way it did in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
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
        f"{shown_url(url)!r} is not a database URL (e.g. 'sqlite:///demo.sqlite3' or "
        "'postgresql://user@127.0.0.1/db')"
    )


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages and banners."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def make_engine(url: str, pool: PoolOptions) -> AsyncEngine:
    driver_url = async_url(url)
    try:
        return create_async_engine(
            driver_url,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout,
            pool_pre_ping=False,
        )
    except (ArgumentError, ValueError) as exc:
        raise DatabaseURLError(f"{shown_url(url)!r} is not a usable database URL: {exc}") from None


async def create_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
