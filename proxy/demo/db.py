"""The demo database: the ``Photo`` table, the async engine and its pool.

The pool is sized like the original application's (20 + 50 overflow) and has a
timeout, so that a crowd exhausts it the way it did in production.

Each photo's ``etag`` (a digest of its blob, made when the photo is stored) lets
``--etag`` answer a conditional request without reading the blob. Databases made
before the column existed get it when the app starts (``create_schema``), and
their photos get their digests when the app starts with ``--etag``
(``fill_etags``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, DateTime, Integer, LargeBinary, String, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from proxy.demo import DatabaseURLError

log = logging.getLogger(__name__)

ETAG_LENGTH = 64  # hex digits of a SHA-256 digest


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
    # A strong validator of ``photo_data`` (``photo_etag``), without its quotes.
    etag: Mapped[str | None] = mapped_column(String(ETAG_LENGTH), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


def photo_etag(blob: bytes) -> str:
    """The entity tag of a photo: its blob's SHA-256, so equal tags mean equal bytes."""
    return hashlib.sha256(blob).hexdigest()


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
    """Create the table if it is missing, and add ``etag`` to a table made without it."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(_add_etag_column)


def _add_etag_column(conn: Connection) -> None:
    table = Photo.__tablename__
    if "etag" in {c["name"] for c in inspect(conn).get_columns(table)}:
        return
    log.info("adding the etag column to the %s table", table)
    kind = Photo.__table__.c.etag.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN etag {kind}")


async def fill_etags(engine: AsyncEngine) -> int:
    """Give every photo without an ``etag`` its digest; returns how many were filled.

    Photos are stored with their digest, so this reads blobs only for photos
    stored before the column existed, once, one blob at a time.
    """
    async with AsyncSession(engine) as session:
        missing = list(await session.scalars(select(Photo.id).where(Photo.etag.is_(None))))
    if missing:
        log.info("computing the etag of %d photos stored without one", len(missing))
    filled = 0
    for photo_id in missing:
        async with AsyncSession(engine) as session, session.begin():
            blob = await session.scalar(select(Photo.photo_data).where(Photo.id == photo_id))
            if blob is not None:  # deleted since
                await session.execute(
                    update(Photo).where(Photo.id == photo_id).values(etag=photo_etag(blob))
                )
                filled += 1
    return filled
