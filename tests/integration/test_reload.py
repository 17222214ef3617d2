"""Reloading the configuration in place: routes change, the cache stays."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.config import load_config
from proxy.server import Sidecache
from tests.integration.conftest import Clock
from tests.integration.upstream_app import HITS

CONFIG = """
listen: 127.0.0.1:0
control: {{listen: "127.0.0.1:0"}}
upstream: {{url: "http://127.0.0.1:{port}"}}
routes:
{routes}
"""


def _photo_config(tmp_path: Path, upstream: TestServer) -> Path:
    """A config file with one photo route (ttl 5m), for a test to rewrite and reload."""
    path = tmp_path / "sidecache.yaml"
    routes = '  - {name: photo, match: "/api/photo/{id}", ttl: 5m}'
    path.write_text(CONFIG.format(port=upstream.port, routes=routes))
    return path


async def test_reload_changes_routes_and_keeps_the_cache(
    tmp_path: Path, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    path = _photo_config(tmp_path, upstream)
    instance = Sidecache(load_config(path), str(path))
    await instance.start()
    try:
        base = f"http://127.0.0.1:{instance.public_port}"
        async with client.get(f"{base}/api/photo/1") as r:
            assert r.headers["X-Cache"] == "MISS"
        async with client.get(f"{base}/files/1") as r:
            assert r.headers["X-Cache"] == "BYPASS"

        path.write_text(
            CONFIG.format(
                port=upstream.port,
                routes='  - {name: photo, match: "/api/photo/{id}", ttl: 5m}\n'
                '  - {name: files, match: "/files/{id}", ttl: 1m}',
            )
        )
        assert instance.reload() is True
        async with client.get(f"{base}/api/photo/1") as r:
            assert r.headers["X-Cache"] == "HIT"  # the cache survived
        async with client.get(f"{base}/files/1") as r:
            assert r.headers["X-Cache"] == "MISS"  # the new route is in force

        path.write_text("routes: [broken")
        assert instance.reload() is False  # logged, and the old config stays
        async with client.get(f"{base}/files/1") as r:
            assert r.headers["X-Cache"] == "HIT"
        assert instance.runtime is not None
        assert [r.name for r in instance.runtime.config.routes] == ["photo", "files"]
    finally:
        await instance.stop(grace=1.0)


async def _cache_status(client: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with client.get(url) as r:
        await r.read()
        return r.headers["X-Cache"], r.headers["Cache-Status"]


async def test_a_reload_applies_new_ttls_to_stored_entries(
    tmp_path: Path, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    path = tmp_path / "sidecache.yaml"
    route = '  - {{name: photo, match: "/api/photo/{{id}}", {rules}}}'
    path.write_text(CONFIG.format(port=upstream.port, routes=route.format(rules="ttl: 5m")))
    clock = Clock()
    instance = Sidecache(load_config(path), str(path), clock=clock)
    await instance.start()
    try:
        base = f"http://127.0.0.1:{instance.public_port}"
        hits = upstream.app[HITS]
        assert (await _cache_status(client, f"{base}/api/photo/1"))[0] == "MISS"
        assert (await _cache_status(client, f"{base}/api/photo/2"))[0] == "MISS"

        # Shorter: an entry stored under ttl 5m is fresh for 3s from when it was stored.
        path.write_text(
            CONFIG.format(
                port=upstream.port,
                routes=route.format(rules="ttl: 3s, stale_while_revalidate: 10s"),
            )
        )
        assert instance.reload() is True
        clock.now += 2
        assert await _cache_status(client, f"{base}/api/photo/1") == (
            "HIT",
            "sidecache; hit; ttl=1",
        )
        clock.now += 2
        x_cache, status = await _cache_status(client, f"{base}/api/photo/2")
        assert x_cache == "STALE" and "detail=revalidating" in status  # the new stale window
        clock.now += 20
        assert (await _cache_status(client, f"{base}/api/photo/1"))[0] == "MISS"
        assert hits["GET /api/photo/1"] == 2

        # Longer: an entry stored under ttl 3s stays fresh under ttl 5m.
        path.write_text(CONFIG.format(port=upstream.port, routes=route.format(rules="ttl: 5m")))
        assert instance.reload() is True
        clock.now += 60
        assert await _cache_status(client, f"{base}/api/photo/1") == (
            "HIT",
            "sidecache; hit; ttl=240",
        )
        assert hits["GET /api/photo/1"] == 2
    finally:
        await instance.stop(grace=1.0)


async def test_entries_of_a_route_a_reload_removed_are_not_served_and_stay_purgeable(
    tmp_path: Path, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    path = _photo_config(tmp_path, upstream)
    instance = Sidecache(load_config(path), str(path))
    await instance.start()
    try:
        base = f"http://127.0.0.1:{instance.public_port}"
        control = f"http://127.0.0.1:{instance.control_port}"
        for n in (1, 2):
            assert (await _cache_status(client, f"{base}/api/photo/{n}"))[0] == "MISS"
        path.write_text(
            CONFIG.format(
                port=upstream.port, routes='  - {name: images, match: "/api/photo/{id}", ttl: 5m}'
            )
        )
        assert instance.reload() is True
        assert (await _cache_status(client, f"{base}/api/photo/1"))[0] == "MISS"  # not photo's
        assert upstream.app[HITS]["GET /api/photo/1"] == 2

        async with client.post(f"{control}/purge", json={"route": "photo"}) as r:
            assert r.status == 200
            assert await r.json() == {"purged": 2}
        async with client.post(f"{control}/purge", json={"route": "photos"}) as r:
            assert r.status == 404  # a name never configured is still a mistake
        async with client.get(f"{control}/stats") as r:
            assert (await r.json())["cache"]["entries"] == 1  # images' entry for /api/photo/1
    finally:
        await instance.stop(grace=1.0)


async def test_a_policy_change_is_logged_and_waits_for_a_restart(
    tmp_path: Path, upstream: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = _photo_config(tmp_path, upstream)
    instance = Sidecache(load_config(path), str(path))
    await instance.start()
    try:
        assert instance.runtime is not None and instance.runtime.store.policy == "gdsf"
        path.write_text(path.read_text() + "cache: {policy: lru}\n")
        with caplog.at_level(logging.WARNING, logger="proxy.server"):
            assert instance.reload() is True
        assert (
            "cache.policy changed in the config (lru, running gdsf): it takes effect on restart"
            in caplog.messages
        )
        assert instance.runtime.store.policy == "gdsf"
        assert instance.runtime.snapshot()["cache"]["policy"] == "gdsf"  # type: ignore[index]
    finally:
        await instance.stop()


async def test_a_shadowed_route_is_logged_at_start_and_on_reload(
    tmp_path: Path, upstream: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sidecache.yaml"
    shadowed = (
        '  - {name: api, match: "/api/{rest:path}", ttl: 1m}\n'
        '  - {name: photo, match: "/api/photo/{id}", ttl: 5m}'
    )
    path.write_text(CONFIG.format(port=upstream.port, routes=shadowed))
    warning = (
        "config: routes[1] 'photo' (/api/photo/{id}) never applies: every path it matches "
        "is matched first by routes[0] 'api' (/api/{rest:path})"
    )
    instance = Sidecache(load_config(path), str(path))
    with caplog.at_level(logging.WARNING, logger="proxy.server"):
        await instance.start()
        try:
            assert caplog.messages.count(warning) == 1
            assert instance.reload() is True
            assert caplog.messages.count(warning) == 2
        finally:
            await instance.stop(grace=1.0)
