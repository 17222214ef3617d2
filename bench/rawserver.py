"""The reference: a raw uvloop ``asyncio.Protocol`` server writing prebuilt hits.

``python -m bench.rawserver PORT SIZE[,SIZE...] OBJECTS`` serves
``/bytes/{size}/{id}`` for each size and ``id`` in ``0..OBJECTS-1`` with the
bench upstream's bytes, each response (status line, a header block like a
sidecache hit's, body) prebuilt and sent with one ``transport.write``. It parses
only the path of each request (keep-alive and pipelining included): what the
machine can do from Python, with no HTTP framework at all.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

from bench.upstream import object_body

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def response(body: bytes) -> bytes:
    """A hit as sidecache sends one: its headers, then the body."""
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Date: Sat, 28 Nov 2026 12:00:00 GMT\r\n"
        "Server: Python/3.11 aiohttp/3.14.5\r\n"
        'ETag: "sc-7aca792e9a845588adb933824bb2d68c"\r\n'
        "Via: 1.1 sidecache\r\n"
        "Age: 0\r\n"
        "X-Cache: HIT\r\n"
        "Cache-Status: sidecache; hit; ttl=299\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def split_requests(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The paths of the complete requests in ``buffer`` (GETs: no bodies), and the rest."""
    *heads, rest = buffer.split(b"\r\n\r\n")
    return [head.split(b" ", 2)[1] for head in heads if head.count(b" ") >= 2], rest


class Raw(asyncio.Protocol):
    def __init__(self, responses: dict[bytes, bytes]) -> None:
        self.responses = responses
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        paths, self.buffer = split_requests(self.buffer + data)
        if paths:
            self.transport.writelines([self.responses.get(p, NOT_FOUND) for p in paths])


async def serve(port: int, sizes: list[int], objects: int) -> None:
    responses = {
        f"/bytes/{size}/{i}".encode(): response(object_body(size, str(i)))
        for size in sizes
        for i in range(objects)
    }
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Raw(responses), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port, sizes, objects = sys.argv[1:4]
    uvloop.run(serve(int(port), [int(s) for s in sizes.split(",")], int(objects)))
