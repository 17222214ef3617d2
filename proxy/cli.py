"""The ``sidecache`` command line: parses arguments and calls into the package.

Owns exit codes and the translation of user errors into one-line messages
(``ConfigError`` -> exit 2, no traceback). No proxy logic lives here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.config import Config, ConfigError, format_routes, load_config, resolve_config_path

EXIT_USAGE = 2


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
    return parser


def _load(path_flag: str | None) -> Config:
    return load_config(resolve_config_path(path_flag, os.environ))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "check":
            config = _load(args.config)
            print(format_routes(config))
            return 0
        if args.command == "serve":
            path = resolve_config_path(args.config, os.environ)
            config = load_config(path)
            from proxy.server import run

            run(serve_config=config, config_path=path)
            return 0
    except ConfigError as exc:
        print(f"sidecache: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A port already in use, or an address that cannot be bound.
        print(f"sidecache: {exc.strerror or exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")
