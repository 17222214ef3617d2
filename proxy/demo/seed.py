"""Filling an empty demo database with real JPEG photos.

Seeding happens once: a database that already holds photos is left as it is,
so the demo reuses its file on the next start.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.demo.db import Photo, photo_etag
from proxy.demo.images import make_jpeg

log = logging.getLogger(__name__)

PHOTOS_PER_EVENT = 24
USERS = 5
PHOTOGRAPHERS = 3
BATCH = 8


def layout(index: int) -> tuple[int, int, int]:
    """(event_id, user_id, photographer_id) of the photo with 0-based ``index``."""
    return index // PHOTOS_PER_EVENT + 1, index % USERS + 1, index % PHOTOGRAPHERS + 1


def _make_batch(indexes: range) -> list[bytes]:
    return [make_jpeg(i) for i in indexes]


async def count_photos(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return int(await session.scalar(select(func.count(Photo.id))) or 0)


async def seed(engine: AsyncEngine, photos: int) -> int:
    """Add ``photos`` photos to an empty database; returns how many were added."""
    existing = await count_photos(engine)
    if existing:
        log.info("database already holds %d photos: not seeding", existing)
        return 0
    log.info("seeding %d photos of about 2-3 MB each", photos)
    for start in range(0, photos, BATCH):
        indexes = range(start, min(start + BATCH, photos))
        # JPEG encoding is CPU work: keep the event loop free for other tasks.
        blobs = await asyncio.to_thread(_make_batch, indexes)
        async with AsyncSession(engine) as session, session.begin():
            for i, blob in zip(indexes, blobs, strict=True):
                event_id, user_id, photographer_id = layout(i)
                session.add(
                    Photo(
                        event_id=event_id,
                        user_id=user_id,
                        photographer_id=photographer_id,
                        filename=f"IMG_{i + 1:04d}.jpg",
                        content_type="image/jpeg",
                        photo_data=blob,
                        etag=photo_etag(blob),
                    )
                )
        log.info("seeded %d/%d photos", indexes[-1] + 1, photos)
    return photos
