"""Several worker processes on one public port (``server.workers`` > 1).

The supervisor (this process) serves no public request. It:

- reserves the public port: a socket bound with SO_REUSEPORT and never listened
  on, kept for its whole life. With ``listen`` on port 0 it learns the port the
  kernel chose, and tells every worker; a worker started again later binds the
  same port, which no program without SO_REUSEPORT can take meanwhile. (Passing
  one listening socket to every worker would share one accept queue; each
  worker's own SO_REUSEPORT socket lets the kernel spread connections itself.)
  A socket that does not listen is given no connection;
- starts the workers (``python -m proxy.worker``), each with a private control
  socket in a directory of its own, and waits until each says ``ready``;
- serves the control port (``proxy.workers_control``), once, for all of them;
- on SIGHUP checks the config file, then has every worker reload it; on
  SIGTERM/SIGINT has every worker drain as a single process does, and exits
  when all have;
- starts again a worker that exits by itself, at most ``MAX_RESTARTS`` times in
  ``RESTART_WINDOW`` seconds; then it stops the others and exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.config import Address, Config, ConfigError, load_config, read_config_text
from proxy.machine import read_machine
from proxy.server import CUT_TIMEOUT, stop_signals
from proxy.worker import READY
from proxy.workers_control import Pool, WorkerLink, build_workers_control_app

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# A worker that has not said "ready" by then is taken as failed (and killed).
START_TIMEOUT = 30.0
# Beyond server.shutdown_grace, what a draining worker gets before it is killed.
STOP_MARGIN = 10.0
EXIT_GAVE_UP = 1


class WorkersFailed(Exception):
    """The workers could not be started, or kept running; the message says why."""


@dataclass
class RestartBudget:
    """At most ``limit`` restarts within any ``window`` seconds. Pure."""

    limit: int = MAX_RESTARTS
    window: float = RESTART_WINDOW
    times: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def reserve_port(address: Address) -> tuple[list[socket.socket], int]:
    """Sockets bound (SO_REUSEPORT, not listening) to every address ``address.host``
    stands for, on one port: the configured one, or one the kernel picks."""
    infos = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    port = address.port
    held: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if (family, str(sockaddr[0])) in seen:
                continue
            seen.add((family, str(sockaddr[0])))
            s = socket.socket(family, kind, proto)
            held.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            s.bind((sockaddr[0], port, *sockaddr[2:]))
            port = s.getsockname()[1]
    except BaseException:
        for s in held:
            s.close()
        raise
    return held, port


@dataclass
class Slot:
    index: int
    link: WorkerLink
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    watcher: asyncio.Task[None] | None = None


class Supervisor:
    """``await start()``, then ``await stop()``; ``failed`` once it gave up."""

    def __init__(
        self,
        config: Config,
        config_path: str,
        *,
        on_give_up: Callable[[], object] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.config_path = os.path.abspath(config_path)
        # Every worker's, for the supervisor's life (``proxy.worker --policy``).
        self._policy = config.cache.policy
        self.clock = clock
        self.on_give_up = on_give_up
        # True once a stop is asked for, before ``stop`` runs: a worker that the
        # same signal (Ctrl-C reaches the whole process group) ended is not restarted.
        self.stop_requested: Callable[[], bool] = lambda: False
        self.failed = False
        self.public_port = 0
        self.control_port = 0
        self._reserved: list[socket.socket] = []
        self._dir: str | None = None
        self._slots: list[Slot] = []
        self._budget = RestartBudget()
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.pool: Pool | None = None

    @property
    def workers(self) -> int:
        return len(self._slots)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        config = self.config
        self._reserved, self.public_port = reserve_port(config.listen)
        self._dir = tempfile.mkdtemp(prefix="sidecache-workers-")  # mode 0700
        self._keep_config(read_config_text(self.config_path))
        self._slots = [
            Slot(i, WorkerLink(i, os.path.join(self._dir, f"worker-{i}.sock")))
            for i in range(config.server.workers)
        ]
        self.pool = Pool(config, [s.link for s in self._slots], self.clock(), self.clock)
        self.pool.memory_limit = read_machine().cgroup_limit
        started = await asyncio.gather(
            *(self._launch(slot) for slot in self._slots), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        loop = asyncio.get_running_loop()
        for slot in self._slots:
            slot.watcher = loop.create_task(self._watch(slot))
        self._runner = web.AppRunner(
            build_workers_control_app(self.pool), access_log=None, shutdown_timeout=CUT_TIMEOUT
        )
        await self._runner.setup()
        address = config.control.listen
        site = web.TCPSite(self._runner, address.host, address.port, backlog=1024)
        await site.start()
        server = getattr(site._server, "sockets", None)
        assert server
        self.control_port = server[0].getsockname()[1]
        self._sampler = loop.create_task(self.pool.sample_forever())
        log.info(
            "sidecache listening on %s:%d (control %s:%d), upstream %s, %d routes, %d workers",
            config.listen.host,
            self.public_port,
            address.host,
            self.control_port,
            config.upstream.url,
            len(config.routes),
            len(self._slots),
        )

    async def _launch(self, slot: Slot) -> None:
        """Start ``slot``'s worker and wait until it listens; WorkersFailed if it does not."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(slot.link.path)
        slot.ready = False
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.worker",
            "--config", self._config_copy, "--index", str(slot.index),
            "--port", str(self.public_port), "--socket", slot.link.path, "--log-level", level,
            "--policy", self._policy,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        slot.process = proc
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                said = await proc.stdout.readline()
        except TimeoutError:
            said = b""
            if proc.returncode is None:
                proc.kill()
        if said != READY:
            code = await proc.wait()
            raise WorkersFailed(
                f"worker {slot.index} exited with code {code} before listening (its log is above)"
            )
        slot.ready = True
        log.info("worker %d listening (pid %d)", slot.index, proc.pid)

    async def _watch(self, slot: Slot) -> None:
        """Start ``slot``'s worker again whenever it exits by itself (bounded)."""
        while True:
            assert slot.process is not None
            code = await slot.process.wait()
            slot.ready = False
            if self._stopping or self.stop_requested():
                return
            if not self._budget.allow(self.clock()):
                log.error(
                    "worker %d exited with code %s, and workers were restarted %d times "
                    "within %gs: giving up, stopping the others",
                    slot.index,
                    code,
                    self._budget.limit,
                    self._budget.window,
                )
                self.failed = True
                self.on_give_up()
                return
            log.warning("worker %d exited with code %s: starting it again", slot.index, code)
            if self.pool is not None:
                self.pool.restarts += 1
            try:
                await self._launch(slot)
            except WorkersFailed as exc:
                log.warning("%s", exc)  # the loop counts it against the budget

    @property
    def _config_copy(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "config.yaml")

    def _keep_config(self, text: str) -> None:
        """Keep ``text`` as the config the workers read, at start and on reload: a
        worker started again later runs the config in force, not whatever the file
        holds by then (an edit not yet reloaded, or half written)."""
        partial = self._config_copy + ".new"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(partial, self._config_copy)

    def reload(self) -> bool:
        """Check the config file, then have every worker reload it (SIGHUP)."""
        try:
            text = read_config_text(self.config_path)
            # On the event loop (a signal handler): no DNS lookups.
            machine = read_machine()
            new = load_config(self.config_path, resolve_hosts=False, text=text, machine=machine)
            self._keep_config(text)
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the current config: %s", exc)
            return False
        old = self.config
        if new.server.workers != old.server.workers:
            log.warning("server.workers changed in the config: it takes effect on restart")
        if new.listen != old.listen or new.control.listen != old.control.listen:
            log.warning("listen addresses changed in the config: they take effect on restart")
        if new.cache.policy != old.cache.policy:
            log.warning("cache.policy changed in the config: it takes effect on restart")
        self.config = new
        if self.pool is not None:
            self.pool.config = new
            self.pool.memory_limit = machine.cgroup_limit
        for slot in self._slots:
            if slot.ready and slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signal.SIGHUP)
        log.info("config checked: %d routes; the workers reload it", len(new.routes))
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Have every worker drain (its own ``server.shutdown_grace``), then close."""
        self._stopping = True
        if self.pool is not None:
            self.pool.draining = True
        if grace is None:
            grace = self.config.server.shutdown_grace
        # No more restarts: a watcher starting a worker again leaves it in its slot.
        watchers = [s.watcher for s in self._slots if s.watcher is not None]
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = [
            s.process for s in self._slots if s.process is not None and s.process.returncode is None
        ]
        if running:
            log.info("stopping: %d workers finish their in-flight requests", len(running))
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            async with asyncio.timeout(grace + STOP_MARGIN):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop in time: killing it", proc.pid)
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        for slot in self._slots:
            await slot.link.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for s in self._reserved:
            s.close()
        self._reserved.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


async def serve_workers(config: Config, config_path: str) -> int:
    """Run the workers until SIGINT or SIGTERM (SIGHUP reloads); the exit code."""
    supervisor = Supervisor(config, config_path)
    with stop_signals(supervisor.reload) as stopping:
        supervisor.on_give_up = stopping.set
        supervisor.stop_requested = stopping.is_set
        try:
            await supervisor.start()
            await stopping.wait()
        finally:
            await supervisor.stop()
    return EXIT_GAVE_UP if supervisor.failed else 0
