"""``sidecache upstream`` and ``sidecache demo``: start the demo app (and the proxy).

``demo`` runs the app and sidecache in one process on embedded defaults: a
SQLite file in the user's cache directory, seeded once, the app on port 8000,
the proxy on 8080 (both on ``--host``, 127.0.0.1 by default) and its control
port on 9090 (always 127.0.0.1: it has no token).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import parse_config
from proxy.demo import DEMO_PHOTOS, DatabaseUnavailable
from proxy.demo.app import build_app
from proxy.demo.db import PoolOptions, create_schema, fill_etags, make_engine, shown_url
from proxy.demo.seed import seed
from proxy.server import Sidecache, stop_signals

log = logging.getLogger(__name__)


# The routes of config/sidecache.yaml (a test keeps the two equal).
DEMO_ROUTES: list[dict[str, object]] = [
    {
        "name": "photo",
        "match": "/api/photo/{id:[0-9]+}",
        "ttl": "5m",
        "stale_while_revalidate": "30s",
        "stale_if_error": "10m",
        "credentials": "shared",
        "client_cache_control": "public, max-age=86400, immutable",
        "content_types": ["image/*"],
    },
    {"name": "my-photos", "match": "/api/my-photos", "ttl": "30s", "credentials": "per-user"},
    {"name": "event-photos", "match": "/api/events/{id:[0-9]+}/photos", "ttl": "30s"},
]


def default_db_url() -> str:
    """A SQLite file in the user's cache directory, reused across runs."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sidecache"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create {base} for the demo database: {exc.strerror or exc} "
            "(choose another place with --db sqlite:///FILE)"
        ) from None
    return f"sqlite:///{base / 'demo.sqlite3'}"


@dataclass(frozen=True)
class UpstreamOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = field(default_factory=default_db_url)
    pool: PoolOptions = field(default_factory=PoolOptions)
    db_latency: float = 0.0
    photos: int = 0
    etag: bool = False  # photos get an ETag and If-None-Match is answered 304


@dataclass
class RunningApp:
    runner: web.AppRunner
    engine: AsyncEngine
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.engine.dispose()


async def start_upstream(options: UpstreamOptions) -> RunningApp:
    """Create the schema, seed if asked and the database is empty, and listen."""
    problem = _sqlite_problem(options.db)
    if problem is not None:
        raise DatabaseUnavailable(f"cannot use the database {shown_url(options.db)}: {problem}")
    engine = make_engine(options.db, options.pool)
    try:
        try:
            await create_schema(engine)
            if options.photos:
                await seed(engine, options.photos)
            if options.etag:
                await fill_etags(engine)
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(
                f"cannot use the database {shown_url(options.db)}: {_reason(exc)}"
            ) from None
        runner = web.AppRunner(
            build_app(engine, db_latency=options.db_latency, etag=options.etag), access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
    except BaseException:
        await engine.dispose()
        raise
    sockets = getattr(site._server, "sockets", None)
    assert sockets
    return RunningApp(runner, engine, sockets[0].getsockname()[1])


def _sqlite_problem(url: str) -> str | None:
    """Why a SQLite file cannot be opened or created, checked before the driver
    tries: aiosqlite's failed connect leaves a worker thread that reports to the
    event loop after it has closed, which prints a traceback on the way out."""
    if not url.startswith(("sqlite:///", "sqlite+aiosqlite:///")):
        return None
    name = url.partition(":///")[2].partition("?")[0]
    if not name or name == ":memory:":
        return None
    path = Path(name)
    folder = path.parent
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else f"{path} is not writable"
    return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder} is not writable"


def _reason(exc: BaseException) -> str:
    """The driver's own words, on one line, without SQLAlchemy's wrapping."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


async def run_upstream(options: UpstreamOptions) -> None:
    with stop_signals() as stopping:
        app = await start_upstream(options)
        pool = options.pool
        print(
            f"demo app on http://{options.host}:{app.port}/ "
            f"(database {shown_url(options.db)}, pool {pool.size} + {pool.max_overflow}, "
            f"pool timeout {pool.timeout:g}s, db latency {options.db_latency * 1000:g} ms"
            f"{', photo ETags' if options.etag else ''})",
            flush=True,
        )
        try:
            await stopping.wait()
        finally:
            await app.stop()


@dataclass(frozen=True)
class DemoOptions:
    app: UpstreamOptions = field(default_factory=lambda: UpstreamOptions(photos=DEMO_PHOTOS))
    host: str = "127.0.0.1"
    port: int = 8080
    control_port: int = 9090


def url_host(host: str) -> str:
    """Where a local client reaches a socket bound to ``host``, as a URL's host."""
    local = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


async def start_demo(options: DemoOptions) -> tuple[RunningApp, Sidecache]:
    app = await start_upstream(options.app)
    config = parse_config(
        {
            "listen": f"{options.host}:{options.port}",
            "upstream": {"url": f"http://{url_host(options.app.host)}:{app.port}"},
            "control": {"listen": f"127.0.0.1:{options.control_port}"},
            "cache": {"max_bytes": "1GiB", "max_object_bytes": "16MiB"},
            "routes": DEMO_ROUTES,
        },
        source="<demo>",
    )
    proxy = Sidecache(config)
    try:
        await proxy.start()
    except BaseException:
        await app.stop()
        raise
    return app, proxy


def demo_banner(app: RunningApp, proxy: Sidecache, host: str) -> str:
    shown = url_host(host)
    return "\n".join(
        [
            "sidecache demo is running. Open:",
            f"  gallery through sidecache  http://{shown}:{proxy.public_port}/gallery/1",
            f"  gallery direct (no cache)  http://{shown}:{app.port}/gallery/1",
            f"  sidecache stats            http://127.0.0.1:{proxy.control_port}/stats",
            "Then try the crowd (in another terminal):",
            f"  sidecache loadtest http://{shown}:{proxy.public_port} --users 50 "
            f"--duration 30s --compare http://{shown}:{app.port} "
            f"--control http://127.0.0.1:{proxy.control_port}",
            "Ctrl-C stops both.",
        ]
    )


async def run_demo(options: DemoOptions) -> None:
    with stop_signals() as stopping:
        app, proxy = await start_demo(options)
        print(demo_banner(app, proxy, options.host), flush=True)
        try:
            await stopping.wait()
            log.info("stopping the demo")
        finally:
            await proxy.stop()
            await app.stop()
