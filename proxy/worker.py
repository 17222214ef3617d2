"""One worker of several (``server.workers`` > 1): ``python -m proxy.worker``.

Started by the supervisor (``proxy.workers``), never by hand. It runs a whole
``Sidecache`` with its share of ``cache.max_bytes``, listening on the public
port the supervisor chose (SO_REUSEPORT: the kernel spreads connections over
the workers) and serving its control app on a private Unix socket, never on a
TCP port. On that socket, besides the usual control endpoints, it answers:

- ``GET /_worker/state``: its counters, histograms and store figures, whole
  (``proxy.merge``), for the supervisor's ``/stats``, ``/metrics`` and dashboard;
- ``POST /_worker/purge`` ``{"kind", "value", "shared"}``: an in-process purge
  (with ``shared``, the shared tier's too), already validated by the supervisor;
- ``GET /_worker/explain?...``: ``/explain`` of this worker, already authorised by
  the supervisor.

It writes ``ready`` on stdout once both sites listen. SIGTERM/SIGINT drain it as
they drain a single process, SIGHUP reloads (the file, then its share); the end
of stdin (the supervisor gone) stops it too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from proxy.config import Address, Config, ConfigError, load_config
from proxy.control import RUNTIME_KEY, build_control_app, explained, json_answer, knows_route
from proxy.machine import rss_bytes
from proxy.merge import figures_document, shared_document, stats_document
from proxy.runtime import Runtime
from proxy.safety import UnsafeHTTPStack
from proxy.server import Sidecache, run_loop, stop_signals

READY = b"ready\n"
EXIT_CONFIG = 2


def worker_config(config: Config, port: int, workers: int) -> Config:
    """``config`` as one of ``workers`` runs it: the supervisor's public port, and
    an equal share of the cache budget (``workers`` is the number running: a
    reload that changes ``server.workers`` takes effect on restart)."""
    share = config.cache.max_bytes // workers
    return config.model_copy(
        update={
            "listen": Address(host=config.listen.host, port=port),
            "cache": config.cache.model_copy(update={"max_bytes": share}),
            # What this process is: one of them, with one share.
            "server": config.server.model_copy(update={"workers": 1}),
        }
    )


class WorkerSidecache(Sidecache):
    """A ``Sidecache`` whose reloads keep the worker's port and cache share."""

    def __init__(self, config: Config, config_path: str, *, port: int, socket: str) -> None:
        self.port = port
        self.workers = config.server.workers
        super().__init__(
            worker_config(config, port, self.workers),
            config_path,
            reuse_port=True,
            control_socket=socket,
            control_app=private_app,
        )

    def apply(self, new: Config) -> None:
        super().apply(worker_config(new, self.port, self.workers))


def worker_state(runtime: Runtime) -> dict[str, object]:
    shared = runtime.shared
    return {
        "pid": os.getpid(),
        "rss": rss_bytes(),
        "policy": runtime.store.policy,
        "stats": stats_document(runtime.stats),
        "cache": figures_document(runtime.store.figures()),
        "shared": None
        if shared is None
        else shared_document(
            shared.breaker.state.value,
            {k: getattr(shared, k) for k in ("hits", "misses", "errors", "skipped")},
            shared.latency,
        ),
        "draining": runtime.draining,
        "storage": {name: c.as_dict() for name, c in runtime.proxy.filler.storage.items()},
        "shadow": runtime.proxy.shadow.snapshot(),
    }


async def _state(request: web.Request) -> web.Response:
    return json_answer(worker_state(request.app[RUNTIME_KEY]))


async def _purge(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await request.json()
    kind, value, shared = str(body["kind"]), body["value"], bool(body["shared"])
    known = kind != "route" or knows_route(runtime, str(value))
    tiers = runtime.tiers
    purged = await tiers.purge(kind, value) if shared else tiers.purge_local(kind, value)
    return json_answer({"purged": purged, "known": known})


async def _explain(request: web.Request) -> web.Response:
    return await explained(request, request.app[RUNTIME_KEY])


def private_app(runtime: Runtime) -> web.Application:
    """The control app, plus what only the supervisor asks; on the private socket."""
    app = build_control_app(runtime)
    app.router.add_get("/_worker/state", _state)
    app.router.add_post("/_worker/purge", _purge)
    app.router.add_get("/_worker/explain", _explain)
    return app


async def _until_eof(stopping: asyncio.Event) -> None:
    """Stop when stdin ends: the supervisor is gone (even killed), so is its worker."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stopping.set()


async def run_worker(config: Config, path: str, port: int, socket: str) -> None:
    instance = WorkerSidecache(config, path, port=port, socket=socket)
    with stop_signals(instance.reload) as stopping:
        orphaned = asyncio.get_running_loop().create_task(_until_eof(stopping))
        try:
            await instance.start()
            sys.stdout.buffer.write(READY)
            sys.stdout.flush()
            await stopping.wait()
        finally:
            orphaned.cancel()
            await instance.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--log-level", default="INFO")
    # The eviction policy the supervisor started with: a worker started again
    # after a reload that changed it keeps the others' (it changes on restart).
    parser.add_argument("--policy")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s worker {args.index} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
        if args.policy and args.policy != config.cache.policy:
            cache = config.cache.model_copy(update={"policy": args.policy})
            config = config.model_copy(update={"cache": cache})
        run_loop(run_worker(config, args.config, args.port, args.socket))
    except (ConfigError, UnsafeHTTPStack) as exc:
        logging.getLogger(__name__).error("worker %d: %s", args.index, exc)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
