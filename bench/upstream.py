"""The benchmark's upstream: fixed bodies, so only the proxies differ.

``python bench/upstream.py PORT`` serves ``/blob/{id}`` (2.5 MB) and
``/small/{id}`` (8 KB) with ``Content-Length`` and a public type.
"""

from __future__ import annotations

import sys

from aiohttp import web

LARGE = 2_621_440
SMALL = 8192


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


def main() -> None:
    app = web.Application()
    app.router.add_get("/blob/{id}", blob)
    app.router.add_get("/small/{id}", small)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
