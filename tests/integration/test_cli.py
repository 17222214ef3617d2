"""The command line as a user runs it: real processes, exit codes, signals."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import ensure_dead, stop_gracefully
from tests.integration.upstream_app import HITS

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on [^:]+:(\d+) \(control [^:]+:(\d+)\)")


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecache.yaml"
    path.write_text(text)
    return path


GOOD = """
listen: 127.0.0.1:0
upstream: {url: "http://127.0.0.1:%d"}
control: {listen: "127.0.0.1:0"}
routes:
  - {name: photo, match: "/api/photo/{id:[0-9]+}", ttl: 5m, credentials: shared}
"""


async def test_check_prints_the_routes_and_exits_0(tmp_path: Path) -> None:
    code, out, err = await run("check", "-c", str(write(tmp_path, GOOD % 8000)))
    assert code == 0, err
    assert "photo" in out and "/api/photo/{id:[0-9]+}" in out and "shared" in out


async def test_check_of_the_shipped_configs_succeeds() -> None:
    for path in [
        ROOT / "config" / "sidecache.yaml",
        *sorted((ROOT / "config").glob("examples/*.yaml")),
    ]:
        code, _, err = await run("check", "-c", str(path))
        assert code == 0, (path, err)


@pytest.mark.parametrize("command", ["check", "serve"])
async def test_a_bad_config_exits_2_with_the_key_path_and_no_traceback(
    tmp_path: Path, command: str
) -> None:
    path = write(tmp_path, (GOOD % 8000).replace("ttl: 5m", "ttl: 5 mins"))
    code, _out, err = await run(command, "-c", str(path))
    assert code == 2
    assert "routes[0].ttl" in err and "'5 mins'" in err and "duration" in err
    assert "Traceback" not in err


async def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD % 8000)
    code, out, _ = await run("check", env={"SIDECACHE_CONFIG": str(path)})
    assert code == 0 and "photo" in out
    code, _, err = await run("check", env={"SIDECACHE_CONFIG": str(tmp_path / "missing.yaml")})
    assert code == 2 and "missing.yaml" in err


async def test_serve_runs_caches_and_stops_cleanly_on_sigterm(
    tmp_path: Path, upstream: TestServer
) -> None:
    path = write(tmp_path, GOOD % upstream.port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "-c",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while not (m := LISTENING.search(line := await proc.stderr.readline())):
                assert line, "serve exited before listening"
        public, control = int(m.group(1)), int(m.group(2))
        async with aiohttp.ClientSession() as client:
            for expected in ("MISS", "HIT"):
                async with client.get(f"http://127.0.0.1:{public}/api/photo/1") as r:
                    assert r.headers["X-Cache"] == expected
            async with client.get(f"http://127.0.0.1:{control}/stats") as r:
                assert (await r.json())["cache"]["hits"] == 1
        assert await stop_gracefully(proc) == 0
    finally:
        await ensure_dead(proc)
    assert upstream.app[HITS]["GET /api/photo/1"] == 1
