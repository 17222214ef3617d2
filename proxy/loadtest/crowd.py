"""The crowd: N simulated users scrolling galleries against one target URL.

Each user follows ``scenario`` (page, then screenfuls of lazy images, now and
then scrolling back, then another event) on a shared client with up to six
connections per user, as a browser would. The run is bounded by a duration and
by a request count, whichever comes first.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from proxy.loadtest.metrics import Recorder
from proxy.loadtest.scenario import gallery_links, image_sources, next_gallery, scroll

CONNECTIONS_PER_USER = 6
MAX_CONNECTIONS = 1024


class LoadTestError(Exception):
    """The target cannot be load-tested as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    users: int = 20
    duration: float = 30.0
    images_per_second: float = 4.0
    max_requests: int = 1_000_000
    timeout: float = 30.0
    ramp_up: float = 2.0
    seed: int = 1
    galleries: tuple[str, ...] = ()


class Crowd:
    """One run against one target; results accumulate in ``recorder``."""

    def __init__(
        self,
        target: str,
        options: LoadOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = URL(target)
        self.options = options
        self.recorder = Recorder()
        self.clock = clock
        self.started = 0.0
        self.elapsed = 0.0
        self.empty_galleries: set[str] = set()  # pages that had no <img src> to load
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    @property
    def now(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    async def run(self) -> Recorder:
        limit = min(MAX_CONNECTIONS, self.options.users * CONNECTIONS_PER_USER)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=self.options.timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            self._session = session
            self.started = self.clock()
            galleries = list(self.options.galleries) or await self._discover()
            users = [
                asyncio.create_task(self._user(i, galleries)) for i in range(self.options.users)
            ]
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.options.duration)
            except TimeoutError:
                pass
            finally:
                self._stop.set()
                self.elapsed = self.now
                # Requests in flight finish (and are counted): the target and the
                # report then agree on every request. Past the timeout, cancel.
                _, late = await asyncio.wait(users, timeout=self.options.timeout)
                for task in late:
                    task.cancel()
                await asyncio.gather(*users, return_exceptions=True)
        return self.recorder

    def stop(self) -> None:
        self._stop.set()

    async def _discover(self) -> list[str]:
        """The galleries linked from the index page (a counted request like any other)."""
        page = await self._fetch("/", want_text=True)
        if page is None:
            kinds = ", ".join(self.recorder.errors) or "no answer"
            raise LoadTestError(f"cannot read {self.target.with_path('/')}: {kinds}")
        links = gallery_links(page)
        if not links:
            raise LoadTestError(
                f"no gallery links (/gallery/N) on {self.target.with_path('/')}: "
                "name the galleries with --gallery /gallery/1"
            )
        return links

    async def _user(self, index: int, galleries: list[str]) -> None:
        rng = random.Random(self.options.seed * 100_003 + index)
        if await self._pause(rng.uniform(0, self.options.ramp_up)):
            return
        current: str | None = None
        while not self._stop.is_set():
            current = next_gallery(rng, galleries, current)
            page = await self._fetch(current, want_text=True)
            if page is None:
                if await self._pause(1.0):
                    return
                continue
            images = image_sources(page)
            if not images:
                self.empty_galleries.add(current)
            for step in scroll(rng, images, self.options.images_per_second):
                await asyncio.gather(*(self._fetch(url) for url in step.urls))
                if await self._pause(step.pause):
                    return

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the run ends first; True if it ended."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _fetch(self, path: str, *, want_text: bool = False) -> str | None:
        if self._stop.is_set():
            return None
        assert self._session is not None
        url = self.target.join(URL(path))
        start = self.clock()
        status: int | None = None
        nbytes = 0
        x_cache: str | None = None
        error: str | None = None
        text: str | None = None
        try:
            async with self._session.get(url) as r:
                status, x_cache = r.status, r.headers.get("X-Cache")
                if want_text:
                    body = await r.read()
                    nbytes = len(body)
                    text = body.decode("utf-8", "replace")
                else:
                    async for chunk in r.content.iter_chunked(256 * 1024):
                        nbytes += len(chunk)
            if status >= 500 or status >= 400:
                error = f"http-{status}"
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientPayloadError:
            error = "truncated"
        except (aiohttp.ClientConnectionError, OSError):
            error = "connection"
        except aiohttp.ClientError:
            error = "client-error"
        end = self.clock()
        self.recorder.record(
            end - self.started,
            end - start,
            status=status,
            nbytes=nbytes,
            x_cache=x_cache,
            error=error,
        )
        if self.recorder.requests >= self.options.max_requests:
            self._stop.set()
        return text if error is None else None
