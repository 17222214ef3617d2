"""Latency of a shared-tier hit: one 2.5 MB entry read back from Redis and decoded.

.venv/bin/python -m bench.shared [--url redis://127.0.0.1:6379/0] [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from proxy.breaker import Breaker
from proxy.entry import StoredResponse
from proxy.shared import SharedTier


async def measure(url: str, count: int, size: int) -> list[float]:
    tier = SharedTier(
        url, namespace="sidecache-bench", timeout=2.0, lock_timeout=5.0, breaker=Breaker()
    )
    now = time.monotonic()
    entry = StoredResponse(
        key="bench",
        route="photo",
        path="/bench",
        status=200,
        headers=(("Content-Type", "image/jpeg"),),
        body=bytes(size),
        etag='"e"',
        stored_at=now,
        fresh_until=now + 300,
        stale_until=now + 600,
    )
    try:
        if not await tier.put(entry):
            raise SystemExit(f"cannot write to {url}")
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            got = await tier.get("bench")
            latencies.append((time.perf_counter() - started) * 1000)
            assert got is not None and len(got.body) == size
        await tier.cache.client.delete(tier.redis_key("bench"))
    finally:
        await tier.close()
    return sorted(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=2_500_000)
    args = parser.parse_args()
    lat = asyncio.run(measure(args.url, args.count, args.size))

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    print(
        f"{args.size / 1e6:.1f} MB shared-tier hit (get + decode), {args.count} reads: "
        f"p50 {pick(0.5):.2f} ms, p95 {pick(0.95):.2f} ms, p99 {pick(0.99):.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
