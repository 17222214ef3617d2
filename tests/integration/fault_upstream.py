"""An upstream process that misbehaves on purpose, written on raw asyncio streams
so that it can break HTTP in ways a framework would not let it.

``python -m tests.integration.fault_upstream`` prints ``{"port": N}`` and serves:

- ``GET /photo/{id}``: a 100,000-byte body, shaped by the current mode;
- ``GET /_mode?set=MODE``: switch the mode for later requests;
- ``GET /_count``: how many ``/photo/`` requests arrived, as JSON.

Modes: ``ok``; ``error`` (500); ``close-mid-body`` (Content-Length 100000, 40000
bytes, then the connection closes); ``short-length`` (Content-Length 100000,
60000 bytes, then silence); ``stall`` (headers and 10 bytes, then silence);
``slow-head`` (nothing at all, the connection held open); ``chunked-cut``
(chunked, two chunks, then the connection closes without the last chunk).
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit

SIZE = 100_000
BODY = bytes(i % 251 for i in range(SIZE))
state = {"mode": "ok", "count": 0}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            url = urlsplit(target)
            if url.path == "/_mode":
                state["mode"] = parse_qs(url.query)["set"][0]
                await reply(writer, 200, b"ok")
            elif url.path == "/_count":
                await reply(writer, 200, json.dumps({"count": state["count"]}).encode())
            elif url.path.startswith("/photo/"):
                state["count"] += 1
                if not await photo(writer, state["mode"]):
                    return
            else:
                await reply(writer, 404, b"not found")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def reply(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def photo(writer: asyncio.StreamWriter, mode: str) -> bool:
    """Answer one photo request; False when the connection must end."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {SIZE}\r\n\r\n"
    if mode == "ok":
        writer.write(head.encode() + BODY)
        await writer.drain()
        return True
    if mode == "error":
        await reply(writer, 500, b"internal error")
        return True
    if mode == "close-mid-body":
        writer.write(head.encode() + BODY[:40_000])
        await writer.drain()
        return False
    if mode in ("short-length", "stall"):
        writer.write(head.encode() + BODY[: 60_000 if mode == "short-length" else 10])
        await writer.drain()
        await asyncio.Event().wait()
    if mode == "slow-head":
        await asyncio.Event().wait()
    if mode == "chunked-cut":
        chunked = (
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(chunked.encode() + b"1000\r\n" + BODY[:4096] + b"\r\n")
        writer.write(b"1000\r\n" + BODY[4096:8192] + b"\r\n")
        await writer.drain()
        return False
    raise ValueError(mode)


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
