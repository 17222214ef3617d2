"""The command line as a user runs it: real processes, exit codes, signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import (
    Factory,
    Running,
    ensure_dead,
    free_port_that_refuses,
    stop_gracefully,
)
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


async def test_check_warns_about_a_route_an_earlier_one_shadows(tmp_path: Path) -> None:
    text = (GOOD % 8000) + '  - {name: twelve, match: "/api/photo/12", ttl: 1m}\n'
    code, out, err = await run("check", "-c", str(write(tmp_path, text)))
    assert code == 0, err
    assert "twelve" in out
    assert (
        "sidecache: warning: routes[1] 'twelve' (/api/photo/12) never applies: every path it "
        "matches is matched first by routes[0] 'photo' (/api/photo/{id:[0-9]+})"
    ) in err


@pytest.mark.parametrize("command", ["check", "serve"])
async def test_a_listen_host_that_does_not_resolve_exits_2_naming_the_key(
    tmp_path: Path, command: str
) -> None:
    path = write(tmp_path, (GOOD % 8000).replace("127.0.0.1:0", "nohost.invalid:0", 1))
    code, _out, err = await run(command, "-c", str(path))
    assert code == 2
    assert "listen: 'nohost.invalid:0': the host name does not resolve" in err
    assert "Traceback" not in err


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


def one_line(err: str) -> str:
    """The single line a failed admin command prints (no traceback, no usage dump)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def fill(client: aiohttp.ClientSession, proxy: Running, *ids: int) -> None:
    for n in ids:
        async with client.get(proxy.url / f"api/photo/{n}") as r:
            await r.read()


@pytest.mark.parametrize("args", [["--route", ""], [""], ["--route", " "]])
async def test_purge_with_an_empty_name_exits_2_and_purges_nothing(
    sidecache: Factory, client: aiohttp.ClientSession, args: list[str]
) -> None:
    proxy = await sidecache()
    await fill(client, proxy, 1, 2)
    code, _out, err = await run("purge", *args, "--control", str(proxy.control))
    assert code == 2
    assert "empty" in one_line(err) and "--all" in err
    assert proxy.runtime.store.figures().entries == 2
    code, out, err = await run("purge", "--all", "--control", str(proxy.control))
    assert code == 0 and "purged 2 entries" in out, err


@pytest.mark.parametrize(
    "control", ["", "http://[::1", "localhost:9090", "ftp://127.0.0.1/", "http://127.0.0.1:99999"]
)
@pytest.mark.parametrize("command", [["stats"], ["purge", "--all"]])
async def test_a_bad_control_url_exits_2_with_one_line(command: list[str], control: str) -> None:
    code, _out, err = await run(*command, "--control", control)
    assert code == 2
    assert "is not an http(s) URL" in one_line(err)


async def test_a_refused_control_port_exits_1_with_one_line() -> None:
    port = free_port_that_refuses()
    for command in (["stats"], ["purge", "--all"]):
        code, _out, err = await run(*command, "--control", f"http://127.0.0.1:{port}")
        assert code == 1
        assert "cannot reach the control port" in one_line(err)


async def _not_a_control_port(request: web.Request) -> web.Response:
    if request.path.startswith("/html"):
        return web.Response(
            text="<!doctype html><h1>Welcome</h1>\n<p>nginx</p>", content_type="text/html"
        )
    if request.path.startswith("/missing"):
        return web.Response(status=404, text="<html>\nNot Found\n</html>", content_type="text/html")
    return web.json_response({"hello": "world", "cache": 1})


@pytest.mark.parametrize("prefix", ["/html", "/json", "/missing"])
async def test_a_url_that_is_not_a_control_port_exits_1_with_one_line(
    aiohttp_server: Callable[..., Awaitable[TestServer]], prefix: str
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _not_a_control_port)
    server = await aiohttp_server(app)
    control = str(server.make_url(prefix))
    for command in (["stats"], ["stats", "--json"], ["purge", "--all"]):
        code, out, err = await run(*command, "--control", control)
        assert code == 1, (command, out, err)
        assert "is it a sidecache control port?" in one_line(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "argument --rate: '-1' is not a positive number"),
        (["--rate", "0"], "argument --rate: '0' is not a positive number"),
        (["--rate", "nan"], "argument --rate: 'nan' is not a positive number"),
        (["--rate", "inf"], "argument --rate: 'inf' is not a positive number"),
        (["--duration", "0"], "argument --duration: '0' is not a positive duration"),
        (["--control", "127.0.0.1:9090"], "argument --control: '127.0.0.1:9090' is not an http(s)"),
        (["--compare", "not-a-url"], "argument --compare: 'not-a-url' is not an http(s) URL"),
    ],
)
async def test_loadtest_refuses_bad_arguments_with_exit_2(args: list[str], message: str) -> None:
    target = f"http://127.0.0.1:{free_port_that_refuses()}"
    code, _out, err = await run("loadtest", target, "--no-progress", *args)
    assert code == 2
    assert f"sidecache loadtest: error: {message}" in err and "Traceback" not in err


async def test_loadtest_says_when_its_target_is_not_a_url() -> None:
    code, _out, err = await run("loadtest", "not-a-url", "--no-progress")
    assert code == 2
    assert "argument url: 'not-a-url' is not an http(s) URL" in err and "cannot read" not in err


async def test_explain_prints_what_the_next_request_gets(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(control={"token": "s3cret"})
    await fill(client, proxy, 1)
    host = f"Host: 127.0.0.1:{proxy.url.port}"
    base = ("--control", str(proxy.control), "--token", "s3cret")
    code, out, err = await run(
        "explain", "/api/photo/1", "-H", host, "-H", "Authorization: Bearer tOpSeCrEt", *base
    )
    assert code == 0, err
    assert "GET /api/photo/1" in out and "photo (match /api/photo/{id}; id=1)" in out
    assert "HIT (serve)" in out and "memory, status 200, fresh" in out
    assert "ttl: the route's ttl" in out and "authorization, host" in out
    assert "tOpSeCrEt" not in out + err
    code, out, err = await run("explain", "/api/photo/2", "-H", host, "--json", *base)
    assert code == 0, err
    said = json.loads(out)
    assert said["outcome"]["x_cache"] == "MISS" and said["entry"] is None
    code, out, err = await run("explain", "/api/photo/1", "-X", "DELETE", "-H", host, *base)
    assert code == 0 and "BYPASS (forward)" in out and "bypass: method" in out
    code, _out, err = await run("explain", "/api/photo/1", "-H", "tOpSeCrEt", *base)
    assert code == 2 and "'Name: value'" in one_line(err) and "tOpSeCrEt" not in err
    code, _out, err = await run("explain", "/api/photo/1", "--control", str(proxy.control))
    assert code == 1 and "401" in one_line(err)
