"""The benchmark's upstream: fixed bodies, so only the proxies differ.

``python bench/upstream.py PORT`` serves ``/blob/{id}`` (2.5 MB), ``/small/{id}``
(8 KB), ``/bytes/{n}/{id}`` (``n`` bytes, ``object_body(n, id)``) and ``/big/{id}``
(20 MiB, streamed), all with ``Content-Length``, and ``/chunked/{id}`` (50 MB,
chunked: its length is known only at its end).
"""

from __future__ import annotations

import sys

from aiohttp import web

LARGE = 2_621_440
SMALL = 8192
HUGE = 20 * 1024 * 1024  # over the default max_object_bytes: always streamed through
CHUNKED = 50_000_000


def body(seed: str, size: int) -> bytes:
    unit = f"sidecache-bench-{seed}-".encode()
    return (unit * (size // len(unit) + 1))[:size]


async def blob(request: web.Request) -> web.Response:
    return web.Response(
        body=body(request.match_info["id"], LARGE), content_type="application/octet-stream"
    )


async def small(request: web.Request) -> web.Response:
    return web.Response(
        body=body(request.match_info["id"], SMALL), content_type="application/octet-stream"
    )


def object_body(size: int, ident: str) -> bytes:
    """The body of ``/bytes/{size}/{ident}`` (the raw server builds the same bytes)."""
    return body(f"{size}-{ident}", size)


async def sized(request: web.Request) -> web.Response:
    size = int(request.match_info["size"])
    return web.Response(
        body=object_body(size, request.match_info["id"]), content_type="application/octet-stream"
    )


async def big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = HUGE
    await resp.prepare(request)
    chunk = body(request.match_info["id"], 1024 * 1024)
    for _ in range(HUGE // len(chunk)):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    chunk = body(request.match_info["id"], 1_000_000)
    for _ in range(CHUNKED // len(chunk)):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def main() -> None:
    app = web.Application()
    app.router.add_get("/blob/{id}", blob)
    app.router.add_get("/small/{id}", small)
    app.router.add_get(r"/bytes/{size:\d+}/{id}", sized)
    app.router.add_get("/big/{id}", big)
    app.router.add_get("/chunked/{id}", chunked)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
