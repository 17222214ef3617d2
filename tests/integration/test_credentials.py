"""``credentials: bypass | per-user | shared`` under Authorization and Cookie."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory
from tests.integration.upstream_app import HITS

ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}


def route(credentials: str | None, freshness: str = "origin") -> list[dict[str, object]]:
    r: dict[str, object] = {
        "name": "mine",
        "match": "/api/my-photos",
        "ttl": 60,
        "freshness": freshness,
    }
    if credentials is not None:
        r["credentials"] = credentials
    return [r]


async def fetch(
    client: aiohttp.ClientSession, url: object, headers: dict[str, str]
) -> tuple[str, str]:
    async with client.get(url, headers=headers) as r:  # type: ignore[arg-type]
        return r.headers["X-Cache"], await r.text()


@pytest.mark.parametrize(
    ("credentials", "freshness"), [(None, "route"), ("bypass", "route"), ("bypass", "origin")]
)
@pytest.mark.parametrize(
    "creds",
    [{"Authorization": "Bearer alice"}, {"Cookie": "session=alice"}, {**ALICE, "Cookie": "s=1"}],
)
async def test_bypass_is_the_default_and_stores_nothing(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    credentials: str | None,
    freshness: str,
    creds: dict[str, str],
) -> None:
    """The default on ``route`` routes; on ``origin`` routes, when set."""
    proxy = await sidecache(route(credentials, freshness))
    url = proxy.url / "api/my-photos"
    assert (await fetch(client, url, creds))[0] == "BYPASS"
    assert (await fetch(client, url, creds))[0] == "BYPASS"
    assert upstream.app[HITS]["GET /api/my-photos"] == 2


async def test_per_user_entries_never_cross_users(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(route("per-user"))
    url = proxy.url / "api/my-photos"
    assert await fetch(client, url, ALICE) == ("MISS", '{"user": "alice"}')
    assert await fetch(client, url, BOB) == ("MISS", '{"user": "bob"}')
    assert await fetch(client, url, ALICE) == ("HIT", '{"user": "alice"}')
    assert await fetch(client, url, BOB) == ("HIT", '{"user": "bob"}')
    # The same token with a cookie added is another identity.
    assert (await fetch(client, url, {**ALICE, "Cookie": "x=1"}))[0] == "MISS"
    # Anonymous requests have their own entry (the upstream says 401, not stored).
    async with client.get(url) as r:
        assert r.status == 401
    assert upstream.app[HITS]["GET /api/my-photos"] == 4


async def test_shared_serves_one_entry_and_forwards_credentials_on_a_miss(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(route("shared"))
    url = proxy.url / "api/my-photos"
    assert await fetch(client, url, ALICE) == ("MISS", '{"user": "alice"}')
    # By the operator's declaration the response is the same for everybody.
    assert await fetch(client, url, BOB) == ("HIT", '{"user": "alice"}')
    assert upstream.app[HITS]["GET /api/my-photos"] == 1


async def test_digest_not_raw_credentials_in_keys(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(route("per-user"))
    await fetch(client, proxy.url / "api/my-photos", {"Authorization": "Bearer s3cr3t-token"})
    keys = list(proxy.runtime.store._lru.keys())  # the store's own index
    assert keys and not any("s3cr3t-token" in k for k in keys)


async def test_credentials_never_appear_in_logs(
    sidecache: Factory, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {"Authorization": "Bearer s3cr3t-token", "Cookie": "session=c00kie-value"}
    with caplog.at_level(logging.DEBUG):
        proxy = await sidecache(route("per-user"))  # reads the level when configured
        for _ in range(2):
            await fetch(client, proxy.url / "api/my-photos", secret)
    assert any("Lookup(" in r.getMessage() for r in caplog.records)  # decisions logged
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "s3cr3t-token" not in text and "c00kie-value" not in text
