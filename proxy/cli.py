"""The ``sidecache`` command line: parses arguments and calls into the package.

Owns exit codes and the translation of user errors into one-line messages
(``ConfigError`` -> exit 2, no traceback). No proxy logic lives here.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxy import __version__
from proxy.config import (
    Config,
    ConfigError,
    format_routes,
    load_config,
    memory_lines,
    parse_duration,
    resolve_config_path,
    route_warnings,
)
from proxy.demo import DEMO_PHOTOS, DatabaseUnavailable, DatabaseURLError
from proxy.machine import read_machine
from proxy.memfit import Machine
from proxy.safety import UnsafeHTTPStack

if TYPE_CHECKING:
    from proxy.demo.run import UpstreamOptions

EXIT_USAGE = 2
# What the 'demo' extra installs: `upstream` and `demo` need it, the proxy does not.
DEMO_MODULES = frozenset({"sqlalchemy", "aiosqlite", "asyncpg", "PIL"})


def _control_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command talking to a running instance's control port takes."""
    parser.add_argument(
        "--control",
        default=os.environ.get("SIDECACHE_CONTROL_URL", "http://127.0.0.1:9090"),
        help="control URL (default: $SIDECACHE_CONTROL_URL, else http://127.0.0.1:9090)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SIDECACHE_CONTROL_TOKEN", ""),
        help="control token (default: $SIDECACHE_CONTROL_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="JSON output, for scripts")


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $SIDECACHE_CONFIG, else config/sidecache.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecache",
        description="A caching reverse proxy that runs as a sidecar beside a web application.",
    )
    parser.add_argument("--version", action="version", version=f"sidecache {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SIDECACHE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: $SIDECACHE_LOG_LEVEL, else INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the proxy and its control port")
    _add_config_flag(serve)
    check = sub.add_parser("check", help="validate a config and print the effective routes")
    _add_config_flag(check)

    upstream = sub.add_parser("upstream", help="run the bundled demo photo app (unfixed)")
    _add_app_flags(upstream, port=8000, photos=0)
    upstream.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")

    demo = sub.add_parser("demo", help="run the demo app and sidecache together")
    _add_app_flags(demo, port=8000, photos=DEMO_PHOTOS)
    demo.add_argument("--port", dest="proxy_port", type=int, default=8080, help="sidecache port")
    demo.add_argument("--control-port", type=int, default=9090, help="control port")
    demo.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the app and sidecache (default 127.0.0.1; the control port stays there)",
    )

    for name, text in (
        ("stats", "show a running instance's statistics"),
        ("purge", "remove entries from a running instance's cache"),
    ):
        admin = sub.add_parser(name, help=text)
        _control_arguments(admin)
        if name == "purge":
            admin.add_argument("path", nargs="?", help="a path: every variant of it goes")
            admin.add_argument("--route", help="every entry of this route")
            admin.add_argument("--all", action="store_true", help="everything")

    explain = sub.add_parser(
        "explain", help="what a running instance would do with a request now, and why"
    )
    explain.add_argument(
        "url", help="a path (/api/photo/12) or an absolute URL (its host is the Host)"
    )
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header (repeatable); values are never shown",
    )
    explain.add_argument("-X", "--method", default="GET", help="the request method (GET)")
    explain.add_argument(
        "--peer", help="the client address the public port would see (for trusted_proxies)"
    )
    _control_arguments(explain)

    load = sub.add_parser("loadtest", help="simulate a crowd scrolling galleries against a URL")
    load.add_argument(
        "url", type=_http_url, help="the target, e.g. http://127.0.0.1:8080 (sidecache)"
    )
    load.add_argument("--users", type=_positive_int, default=20, help="simulated users (20)")
    load.add_argument(
        "--duration",
        type=_positive_duration,
        default=30.0,
        help="how long to run, e.g. 30s, 2m (30s)",
    )
    load.add_argument(
        "--rate", type=_positive_number, default=4.0, help="images each user loads per second (4)"
    )
    load.add_argument(
        "--max-requests", type=_positive_int, default=1_000_000, help="stop after this many"
    )
    load.add_argument("--timeout", type=_positive_duration, default=30.0, help="per request (30s)")
    load.add_argument(
        "--gallery",
        action="append",
        default=[],
        metavar="PATH",
        help="gallery page to scroll (repeatable; default: the /gallery/N links of the index page)",
    )
    load.add_argument(
        "--control", metavar="URL", type=_http_url, help="sidecache control URL of the target"
    )
    load.add_argument(
        "--compare", metavar="URL", type=_http_url, help="run the same load against this URL too"
    )
    load.add_argument(
        "--compare-control", metavar="URL", type=_http_url, help="control URL of --compare"
    )
    load.add_argument(
        "--app-stats",
        metavar="URL",
        type=_http_url,
        help="the demo app's /_demo/stats, for database figures (e.g. http://127.0.0.1:8000/_demo/stats)",
    )
    load.add_argument("--report", type=Path, metavar="FILE", help="write FILE.json and FILE.html")
    load.add_argument("--seed", type=int, default=1, help="random seed of the users' choices")
    load.add_argument("--no-progress", action="store_true", help="no live progress display")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number (e.g. 4 or 0.5)")
    return value


def _http_url(text: str) -> str:
    value = text.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL (e.g. http://127.0.0.1:8080)"
        )
    return value


def _add_app_flags(parser: argparse.ArgumentParser, *, port: int, photos: int) -> None:
    dest = "port" if parser.prog.endswith("upstream") else "app_port"
    flag = "--port" if dest == "port" else "--app-port"
    parser.add_argument(flag, dest=dest, type=int, default=port, help=f"app port (default {port})")
    parser.add_argument(
        "--db",
        default=None,
        help="database URL: sqlite:///FILE or postgresql://... "
        "(default: a SQLite file in $XDG_CACHE_HOME/sidecache, else ~/.cache/sidecache)",
    )
    parser.add_argument("--pool-size", type=int, default=20, help="connection pool size (20)")
    parser.add_argument("--max-overflow", type=int, default=50, help="pool overflow (50)")
    parser.add_argument(
        "--pool-timeout", type=_duration, default=10.0, help="wait for a free connection (10s)"
    )
    parser.add_argument(
        "--db-latency",
        type=_duration,
        default=0.0,
        help="extra time each query holds its connection, e.g. 20ms (default 0)",
    )
    parser.add_argument(
        "--photos",
        type=int,
        default=photos,
        help=f"seed this many 2-3 MB JPEGs into an empty database (default {photos})",
    )
    parser.add_argument(
        "--etag",
        action="store_true",
        help="send photos with an ETag and answer If-None-Match with 304 without reading "
        "the blob (default: the original, neither)",
    )


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (e.g. 30s)")
    return value


def _app_options(args: argparse.Namespace, port: int, host: str) -> UpstreamOptions:
    # The demo's modules (SQLAlchemy, Pillow) load only for the commands that use them.
    from proxy.demo.db import PoolOptions
    from proxy.demo.run import UpstreamOptions, default_db_url

    return UpstreamOptions(
        host=host,
        port=port,
        db=args.db or default_db_url(),
        pool=PoolOptions(args.pool_size, args.max_overflow, args.pool_timeout),
        db_latency=args.db_latency,
        photos=args.photos,
        etag=args.etag,
    )


def _load(path_flag: str | None) -> tuple[Config, Machine]:
    machine = read_machine()
    return load_config(resolve_config_path(path_flag, os.environ), machine=machine), machine


def _admin(args: argparse.Namespace) -> int:
    from rich.console import Console

    from proxy.admin import AdminError, AdminUsageError, explain, purge, show_stats

    console = Console()
    try:
        if args.command == "stats":
            show_stats(args.control, args.token, args.json, console)
        elif args.command == "explain":
            explain(
                args.control,
                args.token,
                args.url,
                headers=args.header,
                method=args.method,
                peer=args.peer,
                as_json=args.json,
                console=console,
            )
        else:
            purge(
                args.control,
                args.token,
                path=args.path,
                route=args.route,
                everything=args.all,
                as_json=args.json,
                console=console,
            )
    except AdminError as exc:
        print(f"sidecache {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, AdminUsageError) else 1
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from proxy.loadtest.crowd import LoadOptions, LoadTestError
    from proxy.loadtest.run import Target, run_loadtest
    from proxy.server import run_loop

    options = LoadOptions(
        users=args.users,
        duration=args.duration,
        images_per_second=args.rate,
        max_requests=args.max_requests,
        timeout=args.timeout,
        seed=args.seed,
        galleries=tuple(args.gallery),
    )
    targets = [Target("target", args.url, args.control)]
    if args.compare:
        targets[0] = Target("sidecache" if args.control else "target", args.url, args.control)
        targets.append(Target("compare", args.compare, args.compare_control))
    try:
        run_loop(
            run_loadtest(
                targets,
                options,
                app_stats=args.app_stats,
                report=args.report,
                show_progress=not args.no_progress,
            )
        )
    except LoadTestError as exc:
        print(f"sidecache loadtest: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "check":
            config, machine = _load(args.config)
            print(format_routes(config))
            for n, line in enumerate(memory_lines(config, machine.cgroup_limit)):
                print(f"{'memory' if n == 0 else '':<10}{line}")
            for warning in route_warnings(config):
                print(f"sidecache: warning: {warning}", file=sys.stderr)
            return 0
        if args.command == "serve":
            path = resolve_config_path(args.config, os.environ)
            machine = read_machine()
            config = load_config(path, machine=machine)
            for line in memory_lines(config, machine.cgroup_limit):
                logging.getLogger("proxy.memfit").info("memory: %s", line)
            from proxy.server import run_loop, serve

            if config.server.workers > 1:
                from proxy.workers import WorkersFailed, serve_workers

                try:
                    return run_loop(serve_workers(config, path))
                except WorkersFailed as exc:
                    print(f"sidecache: {exc}", file=sys.stderr)
                    return 1
            run_loop(serve(config, path))
            return 0
        if args.command == "upstream":
            from proxy.demo.run import run_upstream
            from proxy.server import run_loop

            run_loop(run_upstream(_app_options(args, args.port, args.host)))
            return 0
        if args.command == "demo":
            from proxy.demo.run import DemoOptions, run_demo
            from proxy.server import run_loop

            options = DemoOptions(
                app=_app_options(args, args.app_port, args.host),
                host=args.host,
                port=args.proxy_port,
                control_port=args.control_port,
            )
            run_loop(run_demo(options))
            return 0
        if args.command == "loadtest":
            return _loadtest(args)
        if args.command in ("stats", "purge", "explain"):
            return _admin(args)
    except (ConfigError, DatabaseURLError, UnsafeHTTPStack) as exc:
        print(f"sidecache: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailable as exc:
        print(f"sidecache: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in DEMO_MODULES:
            raise
        print(
            f"sidecache: the demo app needs the 'demo' extra ({exc.name} is not installed): "
            "pip install 'sidecache[demo]'",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        # A port already in use, or an address that cannot be bound.
        print(f"sidecache: {exc.strerror or exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")
