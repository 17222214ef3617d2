"""The shared tier: entries in Redis through aiocache's RedisCache.

Owns the connection to the shared store, the key hashing (any path is a valid
key on every backend), the envelope on the wire (bytes kept exact: aiocache's
default serializers would decode to text), per-operation timeouts and the
circuit breaker. Every failure degrades to "not found": the shared tier can
make a request slower by at most ``timeout`` once, never fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiocache import RedisCache
from aiocache.serializers import BaseSerializer
from redis.exceptions import RedisError

from proxy.breaker import Breaker, BreakerState
from proxy.entry import StoredResponse
from proxy.envelope import EnvelopeError, decode, encode
from proxy.keys import loose_path
from proxy.stats import Histogram, quantile

log = logging.getLogger(__name__)


class RawBytes(BaseSerializer):  # type: ignore[misc]  # aiocache is untyped
    """Values are already bytes (envelopes): store and return them untouched."""

    DEFAULT_ENCODING = None

    def dumps(self, value: Any) -> Any:
        return value

    def loads(self, value: Any) -> Any:
        return value


class SharedTier:
    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        timeout: float,
        lock_timeout: float,
        breaker: Breaker,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.breaker = breaker
        self.clock = clock
        self.wall = wall
        self.cache = RedisCache(
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(parts.path.lstrip("/") or 0),
            password=parts.password,
            namespace=namespace,  # RedisCache joins it to keys with ":"
            serializer=RawBytes(),
            timeout=None,  # ours, below, also covers connecting
            create_connection_timeout=timeout,
            ssl=parts.scheme == "rediss",
        )
        self.channel = str(self.cache.build_key("purges"))
        self.node = uuid.uuid4().hex  # this replica, to skip its own purge messages
        self.hits = self.misses = self.errors = self.skipped = 0
        self.latency = Histogram()

    @staticmethod
    def hashed(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()

    def _lock_name(self, key: str) -> str:
        return str(self.cache.build_key("lock:" + self.hashed(key)))

    def redis_key(self, key: str) -> str:
        """The name an entry has in Redis (aiocache adds the namespace its own way)."""
        return str(self.cache.build_key(self.hashed(key)))

    async def _call(self, what: str, op: Callable[[], Any]) -> tuple[bool, Any]:
        """Run one operation under the breaker and the timeout; (ok, result)."""
        if not self.breaker.allow(self.clock()):
            self.skipped += 1
            return False, None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await op()
        except (TimeoutError, RedisError, OSError, EnvelopeError) as exc:
            self.errors += 1
            self.breaker.failure(self.clock())
            log.warning("shared tier %s failed: %s", what, exc or type(exc).__name__)
            return False, None
        self.latency.observe(time.perf_counter() - started)
        self.breaker.success()
        return True, result

    async def get(self, key: str) -> StoredResponse | None:
        return (await self.lookup(key))[1]

    async def lookup(self, key: str) -> tuple[bool, StoredResponse | None]:
        """(answered, entry): ``answered`` is False when the tier failed or was skipped,
        so that a caller can stop asking it for the rest of a request."""

        async def op() -> StoredResponse | None:
            data = await self.cache.get(self.hashed(key))
            if data is None:
                return None
            return decode(data, mono_now=self.clock(), wall_now=self.wall())

        ok, entry = await self._call("get", op)
        if ok and entry is not None:
            self.hits += 1
        elif ok:
            self.misses += 1
        return ok, entry

    async def peek(self, key: str) -> tuple[bool, StoredResponse | None]:
        """``lookup`` that changes nothing (``/explain``): no counters, no latency, and
        the breaker neither asked (which may move it to half-open) nor told; while it
        is not closed the tier is not asked at all. (answered, entry) as ``lookup``."""
        if self.breaker.state is not BreakerState.CLOSED:
            return False, None
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.cache.get(self.hashed(key))
                if data is None:
                    return True, None
                return True, decode(data, mono_now=self.clock(), wall_now=self.wall())
        except (TimeoutError, RedisError, OSError, EnvelopeError):
            return False, None

    async def put(self, entry: StoredResponse) -> bool:
        """Store ``entry`` until its last usable instant, indexed by path, by the
        loose form of its path (``keys.loose_path``) and by route, so that a purge on
        any replica can find it. The exact path index serves replicas that purge
        by it alone (releases before the loose form)."""
        now = self.clock()
        ttl_ms = int((entry.stale_until - now) * 1000)
        if ttl_ms <= 0:
            return False
        data = encode(entry, mono_now=now, wall_now=self.wall())
        name = self.redis_key(entry.key)
        by_path, by_route = self._set_name("path", entry.path), self._set_name("route", entry.route)
        by_loose = self._set_name("loose", loose_path(entry.path))

        async def op() -> Any:
            async with self.cache.client.pipeline(transaction=False) as pipe:
                pipe.set(name, data, px=ttl_ms)
                for index in (by_path, by_loose, by_route):
                    pipe.sadd(index, name)
                    pipe.pexpire(index, ttl_ms, gt=True)
                    pipe.pexpire(index, ttl_ms, nx=True)
                return await pipe.execute()

        ok, _ = await self._call("put", op)
        return ok

    def _set_name(self, kind: str, value: str) -> str:
        return str(self.cache.build_key(f"{kind}:" + self.hashed(value)))

    async def purge(self, kind: str, value: str | None) -> int:
        """Drop entries by ``path``, ``route`` or ``all`` (value None), then tell the
        other replicas (pub/sub) so that they drop their in-process copies. A path
        purge drops every path of the same loose form, as ``store.purge_path`` does."""
        client = self.cache.client

        async def op() -> int:
            if kind == "all":
                names = [n async for n in client.scan_iter(match=self.cache.build_key("*"))]
            else:
                indexes = [self._set_name(kind, value or "")]
                if kind == "path":
                    indexes.append(self._set_name("loose", loose_path(value or "")))
                names = list(indexes)
                for index in indexes:
                    names.extend(await client.smembers(index))
            deleted = 0
            for start in range(0, len(names), 500):
                deleted += int(await client.delete(*names[start : start + 500]))
            message = json.dumps({"kind": kind, "value": value, "origin": self.node})
            await client.publish(self.channel, message)
            return deleted

        ok, deleted = await self._call("purge", op)
        return int(deleted) if ok else 0

    async def listen(self, on_purge: Callable[[str, str | None], object]) -> None:
        """Apply other replicas' purges to this one's in-process tier, for ever;
        reconnects (once a second) while the store is away."""
        while True:
            pubsub = self.cache.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = json.loads(message["data"])
                    if data.get("origin") != self.node:
                        on_purge(str(data["kind"]), data.get("value"))
            except (RedisError, OSError, ValueError, KeyError) as exc:
                log.info("shared tier purge channel lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(1.0)

    async def delete(self, key: str) -> bool:
        ok, _ = await self._call("delete", lambda: self.cache.delete(self.hashed(key)))
        return ok

    async def lock(self, key: str, token: str) -> bool | None:
        """Take the cluster-wide fill lock for ``key`` (a lease of ``lock_timeout``):
        True if taken, False if another replica holds it, None if the tier is away."""
        name = self._lock_name(key)
        lease = int(self.lock_timeout * 1000)
        ok, taken = await self._call(
            "lock", lambda: self.cache.client.set(name, token, nx=True, px=lease)
        )
        return bool(taken) if ok else None

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if it is still ours (compare-and-delete in one script)."""
        name = self._lock_name(key)
        await self._call("unlock", lambda: self.cache._redlock_release(name, token))

    async def locked(self, key: str) -> bool | None:
        """Does some replica hold the lock for ``key``? None if the tier is away."""
        name = self._lock_name(key)
        ok, exists = await self._call("locked", lambda: self.cache.client.exists(name))
        return bool(exists) if ok else None

    def figures(self) -> dict[str, object]:
        p50 = quantile(self.latency.counts, self.latency.bounds, 0.5)
        p99 = quantile(self.latency.counts, self.latency.bounds, 0.99)
        return {
            "state": self.breaker.state.value,
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "skipped": self.skipped,
            "latency_ms_p50": round(p50 * 1000, 2) if p50 is not None else None,
            "latency_ms_p99": round(p99 * 1000, 2) if p99 is not None else None,
        }

    async def close(self) -> None:
        # aiocache 0.12's close() calls redis-py's deprecated close(): go direct.
        await self.cache.client.aclose()
