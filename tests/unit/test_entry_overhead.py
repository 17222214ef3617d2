"""What an entry is charged covers what storing it takes in memory, under every
policy: measured with tracemalloc, body bytes aside (they are charged exactly)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from proxy.budget import POLICIES
from proxy.entry import StoredResponse
from proxy.store import MemoryLRUCache

ENTRIES = 5000


def entry(i: int) -> StoredResponse:
    return StoredResponse(
        key=f"GET http://photos.example/api/photo/{i:06d}?w=320",
        route="photo",
        path=f"/api/photo/{i:06d}",
        status=200,
        headers=(
            ("Content-Type", "image/jpeg"),
            ("ETag", f'"v{i}"'),
            ("Cache-Control", "max-age=300"),
            ("Last-Modified", "Sat, 28 Nov 2026 10:00:00 GMT"),
        ),
        body=b"",
        etag=f'"v{i}"',
        stored_at=0.0,
        fresh_until=1e9,
        stale_until=1e9,
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_an_entry_is_charged_at_least_what_it_takes(policy: str) -> None:
    store = MemoryLRUCache(10**12, clock=lambda: 0.0, policy=policy)
    gc.collect()
    tracemalloc.start()
    try:
        charged = 0
        for i in range(ENTRIES):
            stored = entry(i)
            charged += stored.size
            store.store(stored, 0.0)
        assert store.lookup(stored.key, 0.0) is not None  # prepares a hit's head too
        for i in range(ENTRIES):
            store.lookup(entry(i).key, 0.0)
        gc.collect()
        taken, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.figures().entries == ENTRIES
    assert taken <= charged, (
        f"{policy}: {taken / ENTRIES:.0f} B taken, {charged / ENTRIES:.0f} charged"
    )
