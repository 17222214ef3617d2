"""A test upstream that counts what it receives and misbehaves on request.

Runs in-process behind pytest-aiohttp's ``aiohttp_server`` (a real socket), or as
a separate process: ``python -m tests.integration.upstream_app`` prints its port.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from aiohttp import web

HITS: web.AppKey[Counter[str]] = web.AppKey("hits", Counter)
GATE: web.AppKey[asyncio.Event] = web.AppKey("gate", asyncio.Event)
ARRIVED: web.AppKey[asyncio.Event] = web.AppKey("arrived", asyncio.Event)
LAST: web.AppKey[dict[str, object]] = web.AppKey("last", dict)
# When set, /api/photo/* answers with this status (an app that started failing).
FAIL_WITH: web.AppKey[list[int]] = web.AppKey("fail_with", list)
VERSIONS: web.AppKey[Counter[str]] = web.AppKey("versions", Counter)
# /validated/{id}: the current ETag of each photo (default '"r1"'), which the
# app's 304s are checked against.
TAGS: web.AppKey[dict[str, str]] = web.AppKey("tags", dict)
VALIDATED_LM = "Tue, 24 Nov 2026 10:00:00 GMT"


def photo_body(photo_id: str, size: int) -> bytes:
    unit = f"photo-{photo_id}-".encode()
    return (unit * (size // len(unit) + 1))[:size]


def _count(request: web.Request) -> None:
    request.app[HITS][f"{request.method} {request.path_qs}"] += 1
    request.app[HITS]["total"] += 1
    request.app[LAST].clear()
    request.app[LAST].update(
        method=request.method,
        path_qs=request.raw_path,
        headers=[[k, v] for k, v in request.headers.items()],
    )
    request.app[ARRIVED].set()


async def _gate(request: web.Request) -> None:
    if "gated" in request.query or request.path.startswith("/gated"):
        await request.app[GATE].wait()


async def photo(request: web.Request) -> web.StreamResponse:
    _count(request)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        await request.read()
        named = {
            k: request.query[k] for k in ("location", "content-location") if k in request.query
        }
        return web.Response(status=201 if named else 204, headers=named)
    await _gate(request)
    if request.app[FAIL_WITH]:
        return web.Response(status=request.app[FAIL_WITH][0], text="database pool exhausted")
    size = int(request.query.get("size", "1000"))
    headers = {"Content-Type": request.query.get("type", "image/jpeg")}
    for name in (
        "cache-control",
        "cdn-cache-control",
        "set-cookie",
        "vary",
        "etag",
        "last-modified",
        "expires",
        "age",
    ):
        if name in request.query:
            headers[name] = request.query[name]
    status = int(request.query.get("status", "200"))
    body = photo_body(request.match_info["id"], size)
    if "echo" in request.query:  # show which variant this is
        body = request.headers.get(request.query["echo"], "-").encode() + b"|" + body
    if "chunked" in request.query:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 4096):
            await resp.write(body[i : i + 4096])
        await resp.write_eof()
        return resp
    response = web.Response(status=status, body=body, headers=headers)
    if "compress" in request.query:  # as the client accepts, without saying Vary
        response.enable_compression()
    return response


async def validated(request: web.Request) -> web.Response:
    """A photo whose app checks validators: ``If-None-Match`` against its current
    ETag (``TAGS``), else ``If-Modified-Since`` against its fixed Last-Modified,
    answered 304. Counts ``validated {id}`` (its ``X-Revision``) and ``304 {id}``.
    Query: ``size``; ``lm``: send Last-Modified; ``noetag``: send no ETag."""
    _count(request)
    await _gate(request)
    if request.app[FAIL_WITH]:
        return web.Response(status=request.app[FAIL_WITH][0], text="database pool exhausted")
    photo_id = request.match_info["id"]
    etag = request.app[TAGS].get(photo_id, '"r1"')
    hits = request.app[HITS]
    hits[f"validated {photo_id}"] += 1
    headers = {"X-Revision": str(hits[f"validated {photo_id}"])}
    if "noetag" not in request.query:
        headers["ETag"] = etag
    if "lm" in request.query:
        headers["Last-Modified"] = VALIDATED_LM
    inm = request.headers.get("If-None-Match")
    ims = request.headers.get("If-Modified-Since")
    unchanged = (
        "ETag" in headers and etag in [t.strip() for t in inm.split(",")]
        if inm is not None
        else ims == VALIDATED_LM and "Last-Modified" in headers
    )
    if unchanged:
        hits[f"304 {photo_id}"] += 1
        return web.Response(status=304, headers=headers)
    body = photo_body(photo_id + etag, int(request.query.get("size", "1000")))
    return web.Response(body=body, headers={**headers, "Content-Type": "image/jpeg"})


async def truncated(request: web.Request) -> web.StreamResponse:
    """Promises more than it sends, then drops the connection."""
    _count(request)
    resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    if "chunked" in request.query:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = 100_000
    await resp.prepare(request)
    await resp.write(b"x" * 50_000)
    assert request.transport is not None
    request.transport.close()
    return resp


async def echo(request: web.Request) -> web.Response:
    _count(request)
    await _gate(request)
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
            "chunked": request.headers.get("Transfer-Encoding", "") == "chunked",
            "peer": request.transport.get_extra_info("peername")[1] if request.transport else None,
        },
        headers={"X-Upstream-Hop": "1", "Connection": "X-Upstream-Hop"},
    )


async def my_photos(request: web.Request) -> web.Response:
    _count(request)
    auth = request.headers.get("Authorization", "")
    if not auth:
        return web.Response(status=401, text="login required")
    return web.json_response({"user": auth.removeprefix("Bearer ")})


async def stream(request: web.Request) -> web.StreamResponse:
    """Sends a first chunk, then waits for the gate before the rest."""
    _count(request)
    resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(b"first-chunk;")
    await request.app[GATE].wait()
    await resp.write(b"the-rest")
    await resp.write_eof()
    return resp


async def versioned(request: web.Request) -> web.Response:
    """Each GET of a path answers its next version; the first one waits for the gate
    (a fill held open while the test purges). Unsafe methods answer 204."""
    _count(request)
    if request.method != "GET":
        return web.Response(status=204)
    versions = request.app[VERSIONS]
    versions[request.path] += 1
    version = versions[request.path]
    if version == 1:
        await request.app[GATE].wait()
    return web.Response(body=f"{request.path} version {version}".encode())


async def hang(request: web.Request) -> web.Response:
    _count(request)
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def resolving_delete(request: web.Request) -> web.Response:
    """A DELETE on a path the routes above do not read literally (dot segments,
    ``;`` parameters, ``//``): accepted, as an app that resolves them would."""
    _count(request)
    return web.Response(status=204)


def build_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[HITS] = Counter()
    app[GATE] = asyncio.Event()
    app[ARRIVED] = asyncio.Event()
    app[LAST] = {}
    app[FAIL_WITH] = []
    app[VERSIONS] = Counter()
    app[TAGS] = {}
    app.router.add_route("*", "/api/photo/{id}", photo)
    app.router.add_route("*", "/gated/photo/{id}", photo)
    app.router.add_get("/validated/{id}", validated)
    app.router.add_get("/swr/validated/{id}", validated)
    app.router.add_route("*", "/files/{id}", photo)
    app.router.add_get("/truncated", truncated)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_get("/api/my-photos", my_photos)
    app.router.add_get("/hang", hang)
    app.router.add_route("*", "/versioned/{id}", versioned)
    app.router.add_get("/stream/{id}", stream)
    app.router.add_delete("/api/{tail:.*}", resolving_delete)
    return app


if __name__ == "__main__":
    runner = web.AppRunner(build_app())

    async def main() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
