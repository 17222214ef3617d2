"""Resident memory under churn: how far above ``cache.max_bytes`` does sidecache go?

Starts the bench upstream and sidecache (``max_bytes`` 256 MiB, objects up to
16 MiB), then lets hundreds of concurrent clients stream 2.5 MB objects that
are cached (three times more distinct ones than fit, so the LRU keeps evicting)
and 20 MB objects that are too large to store (pass-through), while sampling
the proxy's resident set size.

``--scenario slow-chunked`` is the worst case instead: slow clients each
stream a distinct 50 MB object sent chunked (no ``Content-Length``, so it might
be storable until it passes ``max_object_bytes``). Both report the resident
set size idle, at its peak, and 20 s after the load ended.

    .venv/bin/python bench/memory.py [--clients 300] [--requests 10]
    .venv/bin/python bench/memory.py --scenario slow-chunked --clients 100 --budget-mib 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

CONFIG = """
listen: 127.0.0.1:{port}
upstream: {{url: "http://127.0.0.1:{upstream}", max_connections: {connections}, queue_timeout: 5m}}
control: {{listen: "127.0.0.1:{control}"}}
cache: {{max_bytes: {budget}, max_object_bytes: 16MiB}}
routes:
  - {{name: blob, match: "/blob/{{id}}", ttl: 5m}}
  - {{name: big, match: "/big/{{id}}", ttl: 5m}}
  - {{name: chunked, match: "/chunked/{{id}}", ttl: 5m}}
"""
# A slow client reads this much, then pauses this long: about 6 MB/s each.
SLOW_READ = 64 * 1024
SLOW_PAUSE = 0.01
AFTER_LOAD_S = 20.0
RUN_LIMIT_S = 600.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def churn(
    urls: Sequence[str], *, clients: int, requests_per_client: int, seed: int = 1
) -> tuple[int, int]:
    """Each client fetches random ``urls`` in turn; returns (responses, bytes)."""
    rng = random.Random(seed)
    plan = [[rng.choice(urls) for _ in range(requests_per_client)] for _ in range(clients)]
    done = [0, 0]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients), timeout=timeout
    ) as session:

        async def client(todo: list[str]) -> None:
            for url in todo:
                async with session.get(url) as r:
                    r.raise_for_status()
                    async for chunk in r.content.iter_chunked(256 * 1024):
                        done[1] += len(chunk)
                done[0] += 1

        await asyncio.gather(*(client(todo) for todo in plan))
    return done[0], done[1]


async def slow_clients(urls: Sequence[str]) -> tuple[int, int]:
    """One slow client per URL, all at once; returns (responses, bytes)."""
    done = [0, 0]
    timeout = aiohttp.ClientTimeout(total=RUN_LIMIT_S)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=len(urls)), timeout=timeout
    ) as session:

        async def client(url: str) -> None:
            async with session.get(url) as r:
                r.raise_for_status()
                async for chunk in r.content.iter_chunked(SLOW_READ):
                    done[1] += len(chunk)
                    await asyncio.sleep(SLOW_PAUSE)
            done[0] += 1

        await asyncio.gather(*(client(url) for url in urls))
    return done[0], done[1]


async def peak_rss_during(pid: int, work: asyncio.Future[Any], every: float = 0.05) -> int:
    peak = rss_bytes(pid)
    while not work.done():
        peak = max(peak, rss_bytes(pid))
        await asyncio.wait({work}, timeout=every)
    return max(peak, rss_bytes(pid))


def s_post(url: str) -> Any:
    """POST {"all": true} to ``url`` in a session of its own (an async context)."""

    @contextlib.asynccontextmanager
    async def post() -> Any:
        async with aiohttp.ClientSession() as s, s.post(url, json={"all": True}) as r:
            yield r

    return post()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def measure(
    clients: int,
    requests: int,
    budget_mib: int,
    connections: int,
    distinct_factor: int = 3,
    *,
    scenario: str = "churn",
    after_load: float = AFTER_LOAD_S,
) -> dict[str, int]:
    """Run the load once; returns the figures (bytes, counts)."""
    from bench.run import process, wait_http

    up, sc, ctl = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecache.yaml"
        config.write_text(
            CONFIG.format(
                port=sc,
                upstream=up,
                control=ctl,
                budget=f"{budget_mib}MiB",
                connections=connections,
            )
        )
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        with (
            process([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up)], **quiet),
            process(
                [sys.executable, "-m", "proxy", "serve", "-c", str(config)], cwd=ROOT, **quiet
            ) as proxy,
        ):
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{ctl}/healthz")
            idle = rss_bytes(proxy.pid)
            load: Coroutine[Any, Any, tuple[int, int]]
            if scenario == "slow-chunked":
                load = slow_clients([f"http://127.0.0.1:{sc}/chunked/{i}" for i in range(clients)])
            else:
                distinct = distinct_factor * budget_mib * MIB // 2_621_440  # N times what fits
                urls = [f"http://127.0.0.1:{sc}/blob/{i}" for i in range(distinct)]
                urls += [f"http://127.0.0.1:{sc}/big/{i}" for i in range(distinct // 10)]
                load = churn(urls, clients=clients, requests_per_client=requests)
            work = asyncio.ensure_future(load)
            peak = await peak_rss_during(proxy.pid, work)
            responses, nbytes = await work
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{ctl}/stats") as r:
                stats = await r.json()
            if scenario == "slow-chunked":  # nothing of it was storable: empty it anyway
                async with s_post(f"http://127.0.0.1:{ctl}/purge") as r:
                    r.raise_for_status()
            await asyncio.sleep(after_load)
            after = rss_bytes(proxy.pid)
    return {
        "clients": clients,
        "connections": connections,
        "responses": responses,
        "bytes_streamed": nbytes,
        "budget": budget_mib * MIB,
        "cache_bytes": stats["cache"]["bytes"],
        "evictions": stats["cache"]["evictions"],
        "rss_idle": idle,
        "rss_peak": peak,
        "rss_after": after,
        "after_s": int(after_load),
    }


def report(f: dict[str, int]) -> str:
    return "\n".join(
        [
            f"clients {f['clients']}, upstream.max_connections {f['connections']}, "
            f"responses {f['responses']}, {f['bytes_streamed'] / 1e9:.1f} GB streamed",
            f"cache: {f['cache_bytes'] / MIB:.0f} MiB used of {f['budget'] / MIB:.0f} MiB, "
            f"{f['evictions']} evictions",
            f"RSS idle {f['rss_idle'] / MIB:.0f} MiB, peak {f['rss_peak'] / MIB:.0f} MiB: "
            f"{(f['rss_peak'] - f['budget']) / MIB:.0f} MiB over the budget; "
            f"{f['rss_after'] / MIB:.0f} MiB {f['after_s']} s after the load",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--budget-mib", type=int, default=256)
    parser.add_argument(
        "--max-connections", type=int, default=50, help="upstream.max_connections (50)"
    )
    parser.add_argument("--scenario", choices=["churn", "slow-chunked"], default="churn")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        figures = asyncio.run(
            measure(
                args.clients,
                args.requests,
                args.budget_mib,
                args.max_connections,
                scenario=args.scenario,
            )
        )
        print(report(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
