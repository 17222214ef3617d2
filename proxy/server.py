"""Process assembly: build the runtime, run the public and control sites, reload, stop.

Owns the lifetime of everything that holds a socket or a task: the upstream
session, the two listening sites, the periodic sweep and the coalescer's fills.
SIGHUP reloads the configuration in place (the cache and counters stay);
SIGINT/SIGTERM stop accepting and let in-flight requests finish within a grace
period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from aiohttp import web

from proxy.admission import Admission
from proxy.breaker import Breaker
from proxy.coalesce import Coalescer
from proxy.config import (
    Config,
    ConfigError,
    format_routes,
    load_config,
    route_lifetimes,
    route_warnings,
)
from proxy.control import build_control_app
from proxy.guard import GuardedServer
from proxy.handler import Proxy
from proxy.logwriter import LineWriter
from proxy.machine import read_machine
from proxy.memfit import Machine
from proxy.metrics import MemoryCollector, SharedFigures, make_registry
from proxy.runtime import Runtime
from proxy.safety import check_http_stack
from proxy.shadow import ShadowIndex
from proxy.shared import SharedTier
from proxy.stats import Stats, storage_document
from proxy.store import SWEEP_BATCH, MemoryLRUCache
from proxy.tiers import Tiers
from proxy.upstream import Upstream

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 10.0
# How often the drain looks for requests still in progress on the public port.
DRAIN_POLL = 0.05
# Once the grace period is over, what is still running is cut within this.
CUT_TIMEOUT = 0.1
# How long open WebSocket tunnels get for their closing handshakes once the grace
# period is over; what is left then is cut.
TUNNEL_CLOSE_WAIT = 1.0


class Sidecache:
    """A running instance: ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        reuse_port: bool | None = None,
        control_socket: str | None = None,
        control_app: Callable[[Runtime], web.Application] = build_control_app,
        machine: Machine | None = None,
    ) -> None:
        """``reuse_port``, ``control_socket`` and ``control_app`` are for a worker of
        several (``proxy.worker``): the public port shared with SO_REUSEPORT, the
        control app on a private Unix socket instead of ``control.listen``.
        ``machine``: the memory limit to report, by default this machine's (read at
        start and on each reload)."""
        self.config = config
        self._machine = machine
        self.clock = clock
        self.config_path = config_path
        self._reuse_port = reuse_port
        self._control_socket = control_socket
        self._control_app = control_app
        self._runners: list[web.BaseRunner] = []
        self._sites: list[web.BaseSite] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._shadow_sweeper: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._public: GuardedServer | None = None
        self._access_writer: LineWriter | None = None
        self.runtime: Runtime | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        config = self.config
        for line in format_routes(config).splitlines():
            log.info("config: %s", line)  # the token is shown as set / not set
        for warning in route_warnings(config):
            log.warning("config: %s", warning)
        for problem in check_http_stack(config.server.allow_unsafe_http_parser):
            log.warning("running anyway (server.allow_unsafe_http_parser): %s", problem)
        store = MemoryLRUCache(config.cache.max_bytes, clock=self.clock, policy=config.cache.policy)
        store.apply_lifetimes(route_lifetimes(config))
        stats = Stats(started_at=self.clock())
        access_writer = LineWriter(
            logging.getLogger("sidecache.access"),
            max_lines=config.log.access_queue,
            on_drop=stats.access_line_dropped,
        )
        access_writer.start()
        self._access_writer = access_writer
        upstream = Upstream(config.upstream, clock=self.clock, on_retry=stats.upstream_retried)
        await upstream.start()
        coalescer = Coalescer()
        store.on_purge(coalescer.detach)  # every purge, whoever asks for it
        shared = _make_shared(config, self.clock)
        tiers = Tiers(store, shared, stats=stats, clock=self.clock)
        admission = Admission(config.upstream.max_connections, config.upstream.queue_timeout, stats)
        proxy = Proxy(
            config,
            tiers=tiers,
            upstream=upstream,
            admission=admission,
            stats=stats,
            coalescer=coalescer,
            access_out=access_writer.put,
            clock=self.clock,
        )
        self.runtime = Runtime(
            config=config,
            tiers=tiers,
            upstream=upstream,
            stats=stats,
            coalescer=coalescer,
            proxy=proxy,
            metrics=make_registry(
                stats,
                store.figures,
                self.clock,
                lambda: _shared_figures(shared),
                lambda: storage_document(proxy.filler.storage),
                proxy.shadow.snapshot,
            ),
            clock=self.clock,
            memory_limit=(self._machine or read_machine()).cgroup_limit,
        )
        self.runtime.metrics.register(MemoryCollector(self.runtime.memory))

        # The low-level Server takes the protocol options itself (ServerRunner
        # ignores them). aiohttp's own access log costs about half of a hit's
        # time at INFO level; a structured access log of ours can replace it.
        limits = config.server
        self._public = GuardedServer(
            proxy,
            header_timeout=limits.header_timeout,
            fast=proxy,
            keepalive_timeout=limits.keepalive_timeout,
            auto_decompress=False,
            handler_cancellation=False,
            access_log=None,
        )
        # stop() drains within the grace period itself; the runners only cut what
        # is left (aiohttp would wait their timeout twice: once for the handler to
        # finish, once more after cancelling it).
        public = web.ServerRunner(self._public, shutdown_timeout=CUT_TIMEOUT)
        control = web.AppRunner(
            self._control_app(self.runtime), access_log=None, shutdown_timeout=CUT_TIMEOUT
        )
        for runner, address in ((public, config.listen), (control, config.control.listen)):
            await runner.setup()
            self._runners.append(runner)
            site: web.BaseSite
            if runner is control and self._control_socket is not None:
                site = web.UnixSite(runner, self._control_socket)
            else:
                reuse_port = self._reuse_port if runner is public else None
                site = web.TCPSite(
                    runner, address.host, address.port, backlog=1024, reuse_port=reuse_port
                )
            await site.start()
            self._sites.append(site)
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(store.sweep_forever(SWEEP_INTERVAL))
        self._sampler = loop.create_task(_sample_forever(self.runtime))
        self._shadow_sweeper = loop.create_task(
            _sweep_shadow_forever(proxy.shadow, self.clock, SWEEP_INTERVAL)
        )
        if shared is not None:
            self._listener = loop.create_task(shared.listen(tiers.purge_local))
        log.info(
            "sidecache listening on %s:%d (control %s), upstream %s, %d routes",
            config.listen.host,
            self.public_port,
            self._control_socket or f"{config.control.listen.host}:{self.control_port}",
            config.upstream.url,
            len(config.routes),
        )

    @property
    def public_port(self) -> int:
        return _bound_port(self._sites[0])

    @property
    def control_port(self) -> int:
        return _bound_port(self._sites[1])

    def reload(self) -> bool:
        """Re-read the config file; keep the old config if the new one is invalid."""
        if self.config_path is None or self.runtime is None:
            return False
        try:
            # On the event loop (a signal handler): no DNS lookups.
            machine = self._machine or read_machine()
            new = load_config(self.config_path, resolve_hosts=False, machine=machine)
        except ConfigError as exc:
            log.error("reload failed, keeping the current config: %s", exc)
            return False
        self.apply(new)
        self.runtime.memory_limit = machine.cgroup_limit
        return True

    def apply(self, new: Config) -> None:
        runtime = self.runtime
        assert runtime is not None
        old = self.config
        if new.listen != old.listen or new.control.listen != old.control.listen:
            log.warning("listen addresses changed in the config: they take effect on restart")
        if new.upstream != old.upstream:
            log.warning("upstream settings changed in the config: they take effect on restart")
        if new.cache.policy != runtime.store.policy:
            # Entries are not moved from one policy's queues to another's: the
            # frequencies the new one would need are not there to move.
            log.warning(
                "cache.policy changed in the config (%s, running %s): it takes effect on restart",
                new.cache.policy,
                runtime.store.policy,
            )
        runtime.store.resize(new.cache.max_bytes)
        runtime.proxy.apply(new)
        if self._access_writer is not None:
            self._access_writer.max_lines = new.log.access_queue
        expired = runtime.store.apply_lifetimes(route_lifetimes(new))
        if expired:
            log.info("reload: %d entries expired under the new route rules", expired)
        runtime.config = new
        self.config = new
        log.info("config reloaded: %d routes", len(new.routes))
        for warning in route_warnings(new):
            log.warning("config: %s", warning)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests and fills finish within ``grace``
        (default ``server.shutdown_grace``), then close everything."""
        if grace is None:
            grace = self.config.server.shutdown_grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for task in (self._sweeper, self._sampler, self._shadow_sweeper, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Stop accepting on the public port, then let in-flight requests and fills
        # finish, all within one grace period. The control port stays up until the
        # end: /healthz still answers, /readyz says "draining", /stats is readable.
        if self.runtime is not None:
            self.runtime.draining = True
            self.runtime.proxy.tunnels.draining = True  # no new ones
        public_sites, other_sites = self._sites[:1], self._sites[1:]
        public_runners, other_runners = self._runners[:1], self._runners[1:]
        for site in public_sites:
            await site.stop()
        if self._public is not None:
            self._public.pre_shutdown()  # keep-alive connections close after their request
            log.info("stopping: finishing in-flight requests (up to %gs)", grace)
        if self.runtime is not None:
            await self.runtime.coalescer.close(max(0.0, deadline - loop.time()))
        if self._public is not None:
            await _drain(self._public, deadline)
        if self.runtime is not None:
            # WebSocket tunnels last until closed: the grace period is over.
            await self.runtime.proxy.tunnels.close(TUNNEL_CLOSE_WAIT)
        for runner in public_runners:
            await runner.cleanup()  # cuts what the grace period did not see finish
        for site in other_sites:
            await site.stop()
        for runner in other_runners:
            await runner.cleanup()
        if self.runtime is not None:
            await self.runtime.upstream.close()
            if self.runtime.shared is not None:
                await self.runtime.shared.close()
        self._sites.clear()
        self._runners.clear()
        self._public = None
        if self._access_writer is not None:
            # Every request has been accounted for: the last lines are queued.
            writer, self._access_writer = self._access_writer, None
            writer.close()
            if not await asyncio.to_thread(writer.join):
                log.warning("stopping: the access log's last lines could not be written in time")


def _make_shared(config: Config, clock: Callable[[], float]) -> SharedTier | None:
    s = config.cache.shared
    if s is None:
        return None
    return SharedTier(
        s.url,
        namespace=s.namespace,
        timeout=s.timeout,
        lock_timeout=s.lock_timeout,
        breaker=Breaker(failures=s.breaker_failures, reset=s.breaker_reset),
        clock=clock,
    )


def _shared_figures(shared: SharedTier | None) -> SharedFigures | None:
    if shared is None:
        return None
    f = shared.figures()
    counts = {k: int(f[k]) for k in ("hits", "misses", "errors", "skipped")}  # type: ignore[call-overload]
    return SharedFigures(str(f["state"]), counts, shared.latency)


async def _drain(server: GuardedServer, deadline: float) -> None:
    """Wait until no request is in progress on ``server``, or ``deadline`` (loop time).

    Polled: aiohttp signals the end of a request only to its own shutdown, whose
    timeout is what this replaces."""
    loop = asyncio.get_running_loop()
    while server.requests_in_progress() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(DRAIN_POLL, left))


async def _sweep_shadow_forever(
    shadow: ShadowIndex, clock: Callable[[], float], interval: float
) -> None:
    """The shadow index's expired records dropped as the store's entries are
    (``MemoryLRUCache.sweep_forever``), so that both count ``expired`` alike."""
    while True:
        await asyncio.sleep(interval)
        # Batches bound each pause of the event loop; sleep(0) lets requests run between.
        while shadow.sweep(clock(), SWEEP_BATCH) == SWEEP_BATCH:  # noqa: ASYNC110
            await asyncio.sleep(0)


async def _sample_forever(runtime: Runtime) -> None:
    """One history sample a second, for the dashboard."""
    while True:
        runtime.take_sample()
        await asyncio.sleep(1.0)


def _bound_port(site: web.BaseSite) -> int:
    """The port a site really bound: with port 0 in the config, the OS chose it."""
    # aiohttp keeps the server private; asyncio's and uvloop's both have sockets.
    sockets = getattr(site._server, "sockets", None)
    assert sockets
    port: int = sockets[0].getsockname()[1]
    return port


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (about 6 % more hits per
    second than asyncio's default loop, measured with bench/run.py), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    return uvloop.run(main)


@contextlib.contextmanager
def stop_signals(on_reload: Callable[[], object] | None = None) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM (``on_reload`` runs on SIGHUP).

    Installed before start-up, so that a signal that arrives while servers start
    still means "stop cleanly", never the default of dying on the spot.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = [signal.SIGINT, signal.SIGTERM]
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        signals.append(signal.SIGHUP)
    try:
        yield stopping
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def serve(config: Config, config_path: str | None) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads."""
    instance = Sidecache(config, config_path)
    with stop_signals(instance.reload) as stopping:
        try:
            await instance.start()
            await stopping.wait()
        finally:
            await instance.stop()
