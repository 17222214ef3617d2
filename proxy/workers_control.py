"""The control port of several workers, served once, by the supervisor.

Each worker serves its own control app on a private Unix socket (``proxy.worker``)
in a directory only this user can enter; the public control port is this app,
which asks every worker and answers for all of them:

- ``/stats``, ``/api/dashboard``, ``/metrics``: every worker's counters and
  latency histograms added up (``proxy.merge``), rendered by the same code as a
  single process's; ``/stats`` also lists the workers (``workers``);
- ``/purge``: validated and authorised here, then every worker's in-process tier,
  then (one worker) the shared tier; the answer is the sum;
- ``/explain``: validated and authorised here, then asked of every worker: what
  the request decides is the same in each (one config), what it finds is not
  (each has its own cache), so the answer has each worker's ``outcome`` and
  ``entry``, and a top-level ``outcome`` only when they all agree;
- ``/readyz``: ready when every worker is; ``/healthz``: the supervisor answers.

None of the workers' own endpoints is reachable from the public control port.

Why the supervisor asks the workers rather than prometheus_client's
multiprocess mode: that mode aggregates only the library's own metric objects,
which write their values to files as they change, while sidecache's registry is
a collector that reads ``Stats`` when scraped (no metric object on the hot
path). Asking each worker for its ``Stats`` and adding them up keeps one source
for ``/stats`` and ``/metrics`` and the hot path as it is; a scrape costs one
request per worker over its Unix socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.config import Config
from proxy.control import (
    MAX_CONTROL_BODY,
    authorised,
    dashboard,
    explain_question,
    json_answer,
    name_server,
    no_such_route,
    read_purge,
    unauthorised,
)
from proxy.dashboard import History, latency_ms, sample, series, top_routes
from proxy.machine import rss_bytes
from proxy.memfit import memory_figures
from proxy.merge import Merged, Retired, WorkerState, merge, total_rss
from proxy.metrics import CONTENT_TYPE, MemoryCollector, make_registry, render

# A worker that takes longer than this to answer its supervisor counts as away.
PRIVATE_TIMEOUT = 5.0
NO_STORE = {"Cache-Control": "no-store"}


class WorkerLink:
    """The supervisor's client for one worker's private socket."""

    def __init__(self, index: int, path: str) -> None:
        self.index = index
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A new connection per call: a restarted worker listens on a new socket.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(self.path, force_close=True),
                timeout=aiohttp.ClientTimeout(total=PRIVATE_TIMEOUT),
            )
        return self._session

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, str] | None:
        """(status, text) of a request to the worker, or None if it did not answer."""
        try:
            async with self._client().request(method, f"http://worker{path}", json=body) as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def state(self) -> WorkerState | None:
        answer = await self.call("GET", "/_worker/state")
        if answer is None or answer[0] != 200:
            return None
        try:
            return WorkerState.from_document(json.loads(answer[1]))
        except (ValueError, KeyError, TypeError):
            return None

    async def purge(self, kind: str, value: str | None, *, shared: bool) -> dict[str, Any] | None:
        answer = await self.call(
            "POST", "/_worker/purge", {"kind": kind, "value": value, "shared": shared}
        )
        if answer is None or answer[0] != 200:
            return None
        try:
            result: dict[str, Any] = json.loads(answer[1])
        except ValueError:
            return None
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class Pool:
    """What the supervisor's control app reads: the workers and the current config."""

    config: Config
    links: list[WorkerLink]
    started_at: float
    clock: Callable[[], float] = time.monotonic
    history: History = field(default_factory=History)
    draining: bool = False
    restarts: int = 0
    # The cgroup memory limit all the processes share; None: no limit.
    memory_limit: int | None = None
    # ``cache.policy`` as the supervisor started (``__post_init__``).
    policy: str = ""

    def __post_init__(self) -> None:
        if not self.policy:
            self.policy = self.config.cache.policy

    # Each worker's last report, by slot; and what exited workers had counted.
    last: dict[int, WorkerState] = field(default_factory=dict)
    retired: Retired = field(default_factory=Retired)

    async def states(self) -> list[WorkerState | None]:
        states = list(await asyncio.gather(*(link.state() for link in self.links)))
        for link, state in zip(self.links, states, strict=True):
            if state is None:
                continue
            before = self.last.get(link.index)
            if before is not None and before.pid != state.pid:
                # The slot's worker was started again: keep what the last one counted.
                self.retired.add(before)
            self.last[link.index] = state
        return states

    async def merged(self) -> tuple[Merged, list[WorkerState | None]]:
        states = await self.states()
        live = (s for s in states if s is not None)
        return merge(live, self.started_at, self.retired), states

    def memory(self, states: list[WorkerState | None]) -> dict[str, int | None]:
        """The supervisor's RSS and its workers', against the limit they share."""
        return memory_figures(total_rss(rss_bytes(), states), self.memory_limit)

    def snapshot(self, merged: Merged, states: list[WorkerState | None]) -> dict[str, object]:
        snap = {**merged.snapshot(self.clock()), "memory": self.memory(states)}
        cache = snap["cache"]
        assert isinstance(cache, dict)
        # The workers' policy: the one of the config they were started with (a
        # reload that changes it takes effect on restart).
        cache["policy"] = self.policy
        return snap

    async def sample_forever(self) -> None:
        """One dashboard sample a second, of all workers together."""
        while True:
            merged, _ = await self.merged()
            self.history.add(sample(merged.stats, merged.cache, self.clock()))
            await asyncio.sleep(1.0)


POOL_KEY: web.AppKey[Pool] = web.AppKey("pool")


def build_workers_control_app(pool: Pool) -> web.Application:
    app = web.Application(client_max_size=MAX_CONTROL_BODY)
    app[POOL_KEY] = pool
    app.router.add_get("/stats", _stats)
    app.router.add_get("/", dashboard)
    app.router.add_get("/api/dashboard", _dashboard_data)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_post("/purge", _purge)
    app.router.add_get("/explain", _explain)
    app.on_response_prepare.append(name_server)
    return app


def _workers(states: list[WorkerState | None]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for index, state in enumerate(states):
        if state is None:
            out.append({"index": index, "up": False})
            continue
        c = state.stats.cache
        out.append(
            {
                "index": index,
                "up": True,
                "pid": state.pid,
                "requests": c.hits + c.misses + c.stale + c.bypass,
                "entries": state.cache.entries,
                "bytes": state.cache.bytes,
                "rss_bytes": state.rss,
                "policy": state.policy,
            }
        )
    return out


async def _stats(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    merged, states = await pool.merged()
    return json_answer({**pool.snapshot(merged, states), "workers": _workers(states)})


async def _dashboard_data(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    merged, states = await pool.merged()
    return json_answer(
        {
            "stats": pool.snapshot(merged, states),
            "series": series(pool.history),
            "latency": latency_ms(pool.history),
            "routes": top_routes(merged.stats),
        }
    )


class WorkersCollector(Collector):
    def __init__(self, up: int, configured: int, restarts: int) -> None:
        self._up, self._configured, self._restarts = up, configured, restarts

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "sidecache_workers_up", "Worker processes answering the supervisor", self._up
        )
        yield GaugeMetricFamily(
            "sidecache_workers", "Worker processes configured (server.workers)", self._configured
        )
        yield CounterMetricFamily(
            "sidecache_worker_restarts",
            "Workers restarted after exiting unexpectedly",
            self._restarts,
        )


async def _metrics(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    merged, states = await pool.merged()
    registry = make_registry(
        merged.stats,
        lambda: merged.cache,
        pool.clock,
        lambda: merged.shared,
        lambda: merged.storage,
        lambda: merged.shadow,
    )
    up = sum(1 for s in states if s is not None)
    registry.register(WorkersCollector(up, len(pool.links), pool.restarts))
    registry.register(MemoryCollector(lambda: pool.memory(states)))
    return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE, **NO_STORE})


async def _healthz(request: web.Request) -> web.Response:
    # The supervisor's own liveness: it restarts a worker that dies by itself.
    return web.Response(text="ok\n", headers=NO_STORE)


async def _readyz(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    if pool.draining:
        return web.Response(status=503, text="draining\n", headers=NO_STORE)
    answers = await asyncio.gather(*(link.call("GET", "/readyz") for link in pool.links))
    if all(a is not None and a[0] == 200 for a in answers):
        notes = {line for a in answers if a for line in a[1].splitlines()[1:]}
        return web.Response(text="ready\n" + "".join(f"{n}\n" for n in sorted(notes)),
                            headers=NO_STORE)  # fmt: skip
    lines = []
    for link, answer in zip(pool.links, answers, strict=True):
        said = "not answering" if answer is None else answer[1].splitlines()[0]
        lines.append(f"worker {link.index}: {said}\n")
    return web.Response(status=503, text="".join(lines), headers=NO_STORE)


async def _purge(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    if not authorised(request, pool.config.control.token):
        return unauthorised()
    target = await read_purge(request)
    if isinstance(target, web.Response):
        return target
    kind, value = target
    # Every worker's own tier first, counted exactly; then one worker purges the
    # shared tier (and tells the other replicas and workers) once.
    results = await asyncio.gather(*(link.purge(kind, value, shared=False) for link in pool.links))
    answered = [r for r in results if r is not None]
    purged = sum(int(r["purged"]) for r in answered)
    known = kind != "route" or value in {r.name for r in pool.config.routes}
    known = known or any(r["known"] for r in answered)
    if answered and not known:
        return no_such_route(str(value))
    if pool.config.cache.shared is not None:
        for link, result in zip(pool.links, results, strict=True):
            if result is not None:
                more = await link.purge(kind, value, shared=True)
                purged += int(more["purged"]) if more is not None else 0
                break
    away = [link.index for link, r in zip(pool.links, results, strict=True) if r is None]
    if away:
        names = ", ".join(str(i) for i in away)
        return json_answer(
            {"error": f"worker {names} did not answer: purge again", "purged": purged}, 503
        )
    return json_answer({"purged": purged})


# What each worker answers for itself in ``/explain``: the rest is the same in all.
_PER_WORKER = ("outcome", "entry", "vary", "shared_tier")


async def _explain(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    if not authorised(request, pool.config.control.token):
        return unauthorised()
    question = explain_question(request, pool.config.listen)
    if isinstance(question, web.Response):
        return question
    path = "/_worker/explain?" + request.rel_url.raw_query_string
    answers = await asyncio.gather(*(link.call("GET", path) for link in pool.links))
    doc: dict[str, Any] | None = None
    workers: list[dict[str, Any]] = []
    for link, answer in zip(pool.links, answers, strict=True):
        if answer is None or answer[0] != 200:
            workers.append({"index": link.index, "up": False})
            continue
        said: dict[str, Any] = json.loads(answer[1])
        workers.append({"index": link.index, "up": True, **{k: said.get(k) for k in _PER_WORKER}})
        if doc is None:
            doc = {k: v for k, v in said.items() if k not in _PER_WORKER}
    if doc is None:
        return json_answer({"error": "no worker answered: explain again"}, 503)
    outcomes = {json.dumps(w["outcome"], sort_keys=True) for w in workers if w["up"]}
    doc["outcome"] = (
        next(w["outcome"] for w in workers if w["up"])
        if len(outcomes) == 1
        else {
            "x_cache": None,
            "why": "the workers differ (each has its own cache): the next request gets "
            "the outcome of the worker its connection goes to",
        }
    )
    doc["entry"] = None
    doc["workers"] = workers
    return json_answer(doc)
