"""Adversarial requests: each attack is followed by a victim request that must get
exactly the clean response. Raw sockets where an HTTP client would tidy the request."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import ROOT, Clock, Factory, ensure_dead, stop_gracefully
from tests.integration.upstream_app import ARRIVED, FAIL_WITH, GATE, HITS, LAST, photo_body

CLEAN = photo_body("1", 1000)


async def raw(port: int, payload: bytes) -> bytes:
    """Send bytes as they are; return everything the proxy answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def victim(client: aiohttp.ClientSession, url: object) -> tuple[int, bytes]:
    async with client.get(url) as r:  # type: ignore[arg-type]
        return r.status, await r.read()


@pytest.mark.parametrize(
    "attack",
    [
        # Both framings at once: the classic CL.TE / TE.CL desync.
        b"POST /api/photo/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /api/photo/1?poison HTTP/1.1\r\nHost: x\r\n\r\n",
        # Two different Content-Lengths.
        b"POST /api/photo/1 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello",
        # A malformed Content-Length.
        b"POST /api/photo/1 HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        # An odd Transfer-Encoding that some parsers read as chunked.
        b"POST /api/photo/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /api/photo/1 HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        # Obsolete line folding.
        b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        # A bare LF line ending inside the head.
        b"GET /api/photo/1 HTTP/1.1\nHost: x\r\nX-A: 1\r\n\r\n",
        # Whitespace before the colon.
        b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    ],
    ids=["cl-te", "double-cl", "bad-cl", "odd-te", "te-list", "obs-fold", "bare-lf", "space-colon"],
)
async def test_request_smuggling_inputs_get_400_and_the_connection_closed(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, attack: bytes
) -> None:
    proxy = await sidecache()
    answer = await raw(proxy.url.port or 0, attack)  # read() returns: the proxy closed
    # aiohttp answers an unparseable request as HTTP/1.0, then closes.
    assert answer[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400"), answer[:200]
    assert b"200 OK" not in answer  # nothing smuggled behind it was answered
    assert upstream.app[HITS]["total"] == 0  # and nothing reached the app
    assert await victim(client, proxy.url / "api/photo/1") == (200, CLEAN)


async def test_oversized_request_heads_are_refused(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    long_line = b"GET /api/photo/1?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    for attack in (long_line, long_header):
        answer = await raw(proxy.url.port or 0, attack)
        assert answer[9:12] in (b"400", b"431") and answer.startswith(b"HTTP/1."), answer[:100]
    assert await victim(client, proxy.url / "api/photo/1") == (200, CLEAN)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Forwarded-Scheme", "nothttps"),
        ("X-Host", "evil.example"),
        ("Forwarded", "host=evil.example"),
    ],
)
async def test_unkeyed_inputs_never_reach_a_cache_fill(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    name: str,
    value: str,
) -> None:
    # From a peer that is not a trusted proxy (the test client's 127.0.0.1 is
    # trusted by default): a trusted one's X-Forwarded-Host and Forwarded are keyed.
    proxy = await sidecache(server={"trusted_proxies": ["10.0.0.0/8"]})
    async with client.get(proxy.url / "api/photo/1", headers={name: value}) as r:
        assert r.headers["X-Cache"] == "MISS"
    seen = {k.lower(): v for k, v in upstream.app[LAST]["headers"]}  # type: ignore[union-attr]
    assert seen.get(name.lower()) != value  # stripped, or overwritten by the proxy
    async with client.get(proxy.url / "api/photo/1") as r:
        assert (r.headers["X-Cache"], await r.read()) == ("HIT", CLEAN)


async def test_an_unkeyed_input_named_in_vary_is_forwarded_and_keyed(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "p", "match": "/api/photo/{id}", "ttl": 60, "vary": ["x-forwarded-prefix"]}]
    proxy = await sidecache(routes)
    async with client.get(proxy.url / "api/photo/1", headers={"X-Forwarded-Prefix": "/a"}) as r:
        assert r.headers["X-Cache"] == "MISS"
    seen = {k.lower(): v for k, v in upstream.app[LAST]["headers"]}  # type: ignore[union-attr]
    assert seen["x-forwarded-prefix"] == "/a"
    async with client.get(proxy.url / "api/photo/1") as r:
        assert r.headers["X-Cache"] == "MISS"  # another variant


@pytest.mark.slow
async def test_the_server_refuses_to_start_on_the_pure_python_parser(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    body = 'listen: 127.0.0.1:0\ncontrol: {listen: "127.0.0.1:0"}\nupstream: {url: "http://127.0.0.1:1"}\n'
    config.write_text(body)
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "-c", str(config),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"pure-Python HTTP parser" in err and b"allow_unsafe_http_parser" in err
    config.write_text(body + "server: {allow_unsafe_http_parser: true}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", "-c", str(config),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"listening on" not in (line := await proc.stderr.readline()):
                assert line, "serve did not start with the opt-out"
        assert await stop_gracefully(proc) == 0
    finally:
        await ensure_dead(proc)


@pytest.mark.parametrize("purge", [{"path": "/gated/photo/1"}, {"route": "gated"}, {"all": True}])
async def test_a_purge_during_a_fill_keeps_that_fill_out_of_the_cache(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    purge: dict[str, object],
) -> None:
    proxy = await sidecache()
    url = proxy.url / "gated/photo/1"
    filling = asyncio.create_task(victim(client, url))
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()  # the fill is on its way
    async with client.post(proxy.control / "purge", json=purge) as r:
        assert r.status == 200
    upstream.app[GATE].set()
    assert await filling == (200, photo_body("1", 1000))  # the client still gets its answer
    assert proxy.runtime.store.figures().entries == 0  # but the purge won
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
    assert upstream.app[HITS]["GET /gated/photo/1"] == 2


async def test_unsafe_requests_drop_what_location_and_content_location_name(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for i in (7, 8, 9):
        async with client.get(proxy.url / f"api/photo/{i}") as r:
            await r.read()
    here = f"127.0.0.1:{proxy.url.port}"
    named = {
        "location": "/api/photo/7",
        "content-location": f"http://{here}/api/photo/8",  # the client's own host
    }
    async with client.post(proxy.url.with_path("/api/photo/1").with_query(named)) as r:
        assert r.status == 201
    elsewhere = {"location": "http://other.example/api/photo/9"}
    async with client.post(proxy.url.with_path("/api/photo/1").with_query(elsewhere)) as r:
        assert r.status == 201
    states = {}
    for i in (7, 8, 9):
        async with client.get(proxy.url / f"api/photo/{i}") as r:
            states[i] = r.headers["X-Cache"]
    assert states == {7: "MISS", 8: "MISS", 9: "HIT"}  # another origin's path is not ours


def parse_responses(data: bytes) -> list[tuple[bytes, dict[str, list[str]], bytes]]:
    """Split a keep-alive stream into (status line, headers, body), by its framing."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.decode().partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        assert not ("content-length" in headers and "transfer-encoding" in headers), headers
        if "content-length" in headers:
            (length,) = headers["content-length"]
            body, data = rest[: int(length)], rest[int(length) :]
            assert len(body) == int(length)
        elif headers.get("transfer-encoding") == ["chunked"]:
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                chunk, rest = rest[:size], rest[size + 2 :]
                body += chunk
                if size == 0:
                    break
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out


async def test_every_response_is_framed_once_and_exactly(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache()
    requests = [
        b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\n\r\n",  # MISS
        b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\n\r\n",  # HIT
        b"GET /api/photo/2?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",  # MISS, unknown length
        b"GET /api/photo/2?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",  # HIT
        b"GET /files/3?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",  # BYPASS, chunked
        b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n",
    ]
    answer = await raw(proxy.url.port or 0, b"".join(requests))
    responses = parse_responses(answer)
    statuses = [s.split(b" ")[1] for s, _, _ in responses]
    assert statuses == [b"200"] * 5 + [b"206"]
    bodies = [b for _, _, b in responses]
    assert bodies[0] == bodies[1] == photo_body("1", 1000)
    assert bodies[2] == bodies[3] == photo_body("2", 1000)
    assert bodies[4] == photo_body("3", 1000)
    assert bodies[5] == photo_body("1", 1000)[:10]


async def test_an_upstream_304_never_blanks_a_stored_body(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    routes = [{"name": "p", "match": "/api/photo/{id}", "ttl": "10s", "stale_if_error": "1m"}]
    proxy = await sidecache(routes, clock=clock)
    url = proxy.url / "api/photo/1"
    async with client.get(url) as r:
        date = r.headers["Date"]
        assert await r.read() == CLEAN
    async with client.get(url) as r:
        assert r.headers["Date"] == date  # the upstream's Date is kept
    clock.now += 11
    upstream.app[FAIL_WITH].append(304)
    async with client.get(url) as r:
        assert r.status == 304 and await r.read() == b""  # passed through, not stored
    upstream.app[FAIL_WITH][0] = 500
    async with client.get(url) as r:
        assert (r.status, r.headers["X-Cache"], await r.read()) == (200, "STALE", CLEAN)


async def echoed_host(
    client: aiohttp.ClientSession, url: object, host: str | None = None
) -> tuple[str, str]:
    """(X-Cache, the X-Forwarded-Host the app saw when it made the body)."""
    headers = {"Host": host} if host is not None else {}
    async with client.get(url, headers=headers) as r:  # type: ignore[arg-type]
        assert r.status == 200
        return r.headers["X-Cache"], (await r.read()).partition(b"|")[0].decode()


@pytest.mark.parametrize(
    "forged", ["evil.example", "evil.example:8080", "127.0.0.1:1", "EVIL.example.", "127.0.0.1"]
)
async def test_a_forged_host_never_plants_a_response_for_the_next_client(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, forged: str
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(echo="X-Forwarded-Host")
    attack = await echoed_host(client, url, forged)
    assert attack[0] == "MISS"
    innocent = f"127.0.0.1:{proxy.url.port}"
    assert await echoed_host(client, url) == ("MISS", innocent)  # its own entry
    assert await echoed_host(client, url) == ("HIT", innocent)
    assert await echoed_host(client, url, forged) == ("HIT", attack[1])  # kept apart


async def test_hosts_that_normalise_equal_share_one_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(echo="X-Forwarded-Host")
    assert await echoed_host(client, url, "Photos.Example") == ("MISS", "photos.example")
    for same in ("photos.example", "PHOTOS.EXAMPLE.", "photos.example:80", "photos.example:080"):
        assert await echoed_host(client, url, same) == ("HIT", "photos.example"), same
    assert upstream.app[HITS]["total"] == 1


@pytest.mark.parametrize("bad", ["evil example", "a..b", "x@evil.example", "h:99999", "[zz]", ""])
async def test_a_malformed_host_gets_400_and_reaches_nothing(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, bad: str
) -> None:
    proxy = await sidecache()
    payload = f"GET /api/photo/1 HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n"
    answer = await raw(proxy.url.port or 0, payload.encode())
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert upstream.app[HITS]["total"] == 0 and proxy.runtime.store.figures().entries == 0


async def test_an_absolute_form_target_is_for_its_own_host(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    innocent = f"127.0.0.1:{proxy.url.port}"
    path = "/api/photo/1?echo=X-Forwarded-Host"
    attack = f"GET http://EVIL.example:80{path} HTTP/1.1\r\nHost: {innocent}\r\n"
    answer = await raw(proxy.url.port or 0, attack.encode() + b"Connection: close\r\n\r\n")
    assert b"\r\n\r\nevil.example|" in answer  # the target's authority replaced Host
    url = proxy.url.with_path("/api/photo/1").with_query(echo="X-Forwarded-Host")
    assert await echoed_host(client, url) == ("MISS", innocent)
    assert await echoed_host(client, url, "evil.example") == ("HIT", "evil.example")


async def test_allowed_hosts_refuse_every_other_host_before_the_cache(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(server={"allowed_hosts": ["photos.example", "*.cdn.example"]})
    url = proxy.url.with_path("/api/photo/1").with_query(echo="X-Forwarded-Host")
    assert await echoed_host(client, url, "PHOTOS.example.") == ("MISS", "photos.example")
    assert await echoed_host(client, url, "a.b.cdn.example:8080") == (
        "MISS",
        "a.b.cdn.example:8080",
    )
    for refused in ("evil.example", "cdn.example", "127.0.0.1", "photos.example.evil"):
        async with client.get(url, headers={"Host": refused}) as r:
            assert r.status == 400, refused
    absolute = b"GET http://evil.example/api/photo/1 HTTP/1.1\r\nHost: photos.example\r\n"
    answer = await raw(proxy.url.port or 0, absolute + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert upstream.app[HITS]["total"] == 2


@pytest.mark.parametrize(
    "target",
    [
        "/api/photo/1",
        "/api/photo/./1",
        "/api/photo/x/../1",
        "/api/photo/1;v=2",
        "/api/photo/%2e/1",
        "/api//photo/1",
        "http://127.0.0.1:{port}/api/photo/1",
        "http://other.example/api/photo/1",
    ],
)
async def test_a_successful_delete_drops_every_entry_it_may_have_changed(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, target: str
) -> None:
    proxy = await sidecache()
    url = proxy.url / "api/photo/1"
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "HIT"
    port = proxy.url.port or 0
    request = f"DELETE {target.format(port=port)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    answer = await raw(port, request.encode() + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 204"), answer[:200]
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"  # the stale copy did not survive


async def fetch(
    client: aiohttp.ClientSession, url: object, **headers: str
) -> tuple[str, str | None, bytes]:
    """(X-Cache, Content-Encoding, body as sent)."""
    async with client.get(url, headers=headers, skip_auto_headers=["Accept-Encoding"]) as r:  # type: ignore[arg-type]
        assert r.status == 200
        return r.headers["X-Cache"], r.headers.get("Content-Encoding"), await r.read()


async def test_an_encoding_is_served_only_to_clients_that_accept_it(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(compress="1")
    x_cache, coding, body = await fetch(client, url, **{"Accept-Encoding": "gzip"})
    assert (x_cache, coding) == ("MISS", "gzip")
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == CLEAN
    assert await fetch(client, url) == ("MISS", None, CLEAN)  # not the gzip copy
    assert await fetch(client, url) == ("HIT", None, CLEAN)
    assert await fetch(client, url, **{"Accept-Encoding": "gzip;q=0, identity"}) == (
        "HIT",
        None,
        CLEAN,
    )
    assert await fetch(client, url, **{"Accept-Encoding": "GZIP"}) == ("HIT", "gzip", body)
    sent = {k.lower(): v for k, v in upstream.app[LAST]["headers"]}  # type: ignore[union-attr]
    assert "accept-encoding" not in sent  # the identity fill asked for no coding
    x_cache, coding, _ = await fetch(client, url, **{"Accept-Encoding": "gzip, deflate, br"})
    assert coding in (None, "gzip", "br")


async def test_a_language_one_client_sends_never_becomes_everybodys(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(echo="Accept-Language")
    x_cache, _, body = await fetch(client, url, **{"Accept-Language": "xx-evil"})
    assert (x_cache, body.partition(b"|")[0]) == ("MISS", b"-")  # not forwarded on a fill
    x_cache, _, body = await fetch(client, url, **{"Accept-Language": "en"})
    assert (x_cache, body.partition(b"|")[0]) == ("HIT", b"-")


async def test_a_language_the_app_varies_on_is_forwarded_once_it_is_keyed(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(
        echo="Accept-Language", vary="Accept-Language"
    )

    async def language(value: str | None) -> tuple[str, bytes]:
        headers = {"Accept-Language": value} if value is not None else {}
        x_cache, _, body = await fetch(client, url, **headers)
        return x_cache, body.partition(b"|")[0]

    assert await language("de") == ("MISS", b"-")  # before the app's Vary is known
    assert await language("de") == ("MISS", b"de")  # now keyed, so forwarded
    assert await language("de") == ("HIT", b"de")
    assert await language(None) == ("HIT", b"-")
    assert await language("fr") == ("MISS", b"fr")


async def test_kept_query_parameters_are_keyed_and_forwarded_in_one_order(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "p", "match": "/api/photo/{id}", "ttl": 60, "query": ["size", "type"]}]
    proxy = await sidecache(routes)
    url = proxy.url.with_path("/api/photo/1")
    async with client.get(url.with_query("type=image/png&sig=x&size=10")) as r:
        assert (r.headers["X-Cache"], await r.read()) == ("MISS", photo_body("1", 10))
    assert upstream.app[LAST]["path_qs"] == "/api/photo/1?size=10&type=image/png"
    async with client.get(url.with_query("size=10&type=image/png")) as r:
        assert (r.headers["X-Cache"], r.headers["Content-Type"]) == ("HIT", "image/png")


async def test_if_match_and_if_unmodified_since_are_answered_412_on_a_hit(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    lm = "Tue, 24 Nov 2026 10:00:00 GMT"
    url = proxy.url.with_path("/api/photo/1").with_query({"etag": '"v1"', "last-modified": lm})
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
    cases = [
        ({"If-Match": '"v2"'}, 412),
        ({"If-Match": '"v2"', "If-None-Match": '"v1"'}, 412),  # evaluated first
        ({"If-Match": '"v1"'}, 200),
        ({"If-Unmodified-Since": "Tue, 24 Nov 2026 09:00:00 GMT"}, 412),
        ({"If-Unmodified-Since": lm}, 200),
        ({"If-Match": '"v1"', "If-None-Match": '"v1"'}, 304),
    ]
    for headers, status in cases:
        async with client.get(url, headers=headers) as r:
            assert (r.status, r.headers["X-Cache"]) == (status, "HIT"), headers
            assert (await r.read() == CLEAN) is (status == 200)


def seen_by_app(body: bytes) -> dict[str, list[str]]:
    """The request headers the echo app reports it received, by lower-case name."""
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


async def get_raw(port: int, path: str, *lines: str) -> tuple[str, bytes]:
    """(X-Cache, body) of one GET sent byte for byte (repeated fields, odd Connection)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(f"{x}\r\n" for x in lines)
    if not any(x.lower().startswith("connection:") for x in lines):
        head += "Connection: close\r\n"
    ((status, headers, body),) = parse_responses(await raw(port, (head + "\r\n").encode()))
    assert status.startswith(b"HTTP/1.1 200"), status
    return headers["x-cache"][0], body


@pytest.mark.parametrize(
    ("attack", "innocent"),
    [
        (["Cookie: consent=yes", "Cookie: session=ATTACKER"], {"Cookie": "consent=yes"}),
        (
            ["Authorization: Bearer alice", "Authorization: Bearer ATTACKER"],
            {"Authorization": "Bearer alice"},
        ),
    ],
    ids=["cookie", "authorization"],
)
async def test_a_second_credential_line_never_plants_an_account_page(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    attack: list[str],
    innocent: dict[str, str],
) -> None:
    proxy = await sidecache(
        [{"name": "me", "match": "/echo/{x}", "ttl": 60, "credentials": "per-user"}]
    )
    x_cache, body = await get_raw(proxy.url.port or 0, "/echo/me", *attack)
    assert x_cache == "MISS" and b"ATTACKER" in body  # the app saw every line
    for expected in ("MISS", "HIT"):  # the innocent user's own entry
        async with client.get(proxy.url / "echo/me", headers=innocent) as r:
            assert r.headers["X-Cache"] == expected
            assert b"ATTACKER" not in await r.read()
    assert (await get_raw(proxy.url.port or 0, "/echo/me", *attack))[0] == "HIT"


@pytest.mark.parametrize(
    ("route", "attack", "innocent", "name"),
    [
        (
            {"vary": ["accept-language"]},
            ["Accept-Language: fr", "Connection: close, accept-language"],
            {"Accept-Language": "fr"},
            "accept-language",
        ),
        (
            {"credentials": "per-user"},
            ["Cookie: session=alice", "Connection: close, Cookie"],
            {"Cookie": "session=alice"},
            "cookie",
        ),
    ],
    ids=["vary", "per-user"],
)
async def test_a_connection_option_never_strips_a_keyed_header_from_a_fill(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    route: dict[str, object],
    attack: list[str],
    innocent: dict[str, str],
    name: str,
) -> None:
    proxy = await sidecache([{"name": "v", "match": "/echo/{x}", "ttl": 60, **route}])
    x_cache, body = await get_raw(proxy.url.port or 0, "/echo/v", *attack)
    assert name not in seen_by_app(body)  # the hop dropped it, as Connection asks
    for expected in ("MISS", "HIT"):
        async with client.get(proxy.url / "echo/v", headers=innocent) as r:
            assert seen_by_app(await r.read())[name] == [next(iter(innocent.values()))]
            assert r.headers["X-Cache"] == expected
    assert x_cache == "BYPASS"  # so that answer was not stored


async def test_an_answer_keyed_on_its_coding_says_vary_to_caches_in_front(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(compress="1")
    for expected in ("MISS", "HIT"):
        async with client.get(url, headers={"Accept-Encoding": "gzip"}) as r:
            assert (r.headers["X-Cache"], r.headers["Content-Encoding"]) == (expected, "gzip")
            assert "accept-encoding" in r.headers.get("Vary", "").lower()
    async with client.get(url, skip_auto_headers=["Accept-Encoding"]) as r:
        assert (r.headers["X-Cache"], r.headers.get("Content-Encoding")) == ("MISS", None)
        assert "Vary" not in r.headers  # an identity answer suits everybody


def gzip_unless_refused() -> web.Application:
    """An app that gzips whenever ``Accept-Encoding`` allows it, absent included
    (RFC 9110 12.5.3: no header means any coding), and says no ``Vary``."""

    async def page(request: web.Request) -> web.Response:
        seen = request.headers.get("Accept-Encoding")
        body = f"seen={seen}|".encode() + CLEAN
        if seen is None or ("gzip" in seen and "q=0" not in seen):
            return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/api/photo/{id}", page)
    return app


async def test_a_client_that_refuses_every_coding_never_gets_one(
    sidecache: Factory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    client: aiohttp.ClientSession,
) -> None:
    app = await aiohttp_server(gzip_unless_refused())
    proxy = await sidecache(upstream_url=str(app.make_url("/")).rstrip("/"))
    url = proxy.url / "api/photo/1"
    x_cache, coding, body = await fetch(client, url)  # no Accept-Encoding: any coding
    assert (x_cache, coding) == ("MISS", "gzip")
    assert gzip.decompress(body).startswith(b"seen=None|")
    for value, expected in (("identity", "MISS"), ("gzip;q=0", "HIT"), ("", "HIT")):
        x_cache, coding, body = await fetch(client, url, **{"Accept-Encoding": value})
        assert (x_cache, coding, body) == (expected, None, b"seen=identity|" + CLEAN), value
    assert (await fetch(client, url))[:2] == ("HIT", "gzip")


async def test_a_coding_refused_with_parameters_is_refused(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(compress="1")
    assert (await fetch(client, url, **{"Accept-Encoding": "gzip"}))[:2] == ("MISS", "gzip")
    for value in ("gzip;q=0;x=1", "gzip;x=1;q=0", "gzip;q=0.0001"):
        _, coding, body = await fetch(client, url, **{"Accept-Encoding": value})
        assert (coding, body) == (None, CLEAN), value


@pytest.mark.parametrize(
    "name",
    [
        "X-Scheme",
        "X-Forwarded-Protocol",
        "X-Url-Scheme",
        "X-ARR-SSL",
        "X-Script-Name",
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Cluster-Client-Ip",
        "X-ProxyUser-Ip",
        "X-Remote-Addr",
        "Accept-Version",
        "Api-Version",
        "X-Api-Version",
        "Accept-Datetime",
        "Prefer",
        "X-Requested-With",
        "Sec-CH-UA-Mobile",
        "DPR",
        "Width",
        "Viewport-Width",
        "Save-Data",
    ],
)
async def test_a_shaping_header_one_client_sends_never_becomes_everybodys(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, name: str
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(echo=name)
    x_cache, _, body = await fetch(client, url, **{name: "evil"})
    assert (x_cache, body.partition(b"|")[0]) == ("MISS", b"-")  # not forwarded on a fill
    x_cache, _, body = await fetch(client, url)
    assert (x_cache, body) == ("HIT", b"-|" + CLEAN)


@pytest.mark.parametrize("name", ["Sec-CH-UA-Mobile", "Prefer", "X-Api-Version"])
async def test_a_negotiation_header_is_forwarded_once_keyed(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, name: str
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(echo=name, vary=name)

    async def ask(value: str | None) -> tuple[str, bytes]:
        x_cache, _, body = await fetch(client, url, **({name: value} if value else {}))
        return x_cache, body.partition(b"|")[0]

    assert await ask("a") == ("MISS", b"-")  # before the app's Vary is known
    assert await ask("a") == ("MISS", b"a")  # now keyed through it, so forwarded
    assert await ask(None) == ("HIT", b"-")
    assert await ask("b") == ("MISS", b"b")
    assert await ask("a") == ("HIT", b"a")
