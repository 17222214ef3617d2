"""Reloading the configuration in place: routes change, the cache stays."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from proxy.config import load_config
from proxy.server import Sidecache

CONFIG = """
listen: 127.0.0.1:0
control: {{listen: "127.0.0.1:0"}}
upstream: {{url: "http://127.0.0.1:{port}"}}
routes:
{routes}
"""


async def test_reload_changes_routes_and_keeps_the_cache(
    tmp_path: Path, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(
        CONFIG.format(
            port=upstream.port, routes='  - {name: photo, match: "/api/photo/{id}", ttl: 5m}'
        )
    )
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
