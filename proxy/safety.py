"""Start-up check of the HTTP machinery the public port relies on.

aiohttp parses requests with llhttp (C) when its extensions are built, and with
a pure-Python parser otherwise (or with ``AIOHTTP_NO_EXTENSIONS=1``). Request
smuggling defences differ between the two, and releases before 3.14.4 have
known parser CVEs: a shared cache in front of an app must not run on either
without the operator saying so (``server.allow_unsafe_http_parser: true``).
"""

from __future__ import annotations

MINIMUM_AIOHTTP = (3, 14, 4)


class UnsafeHTTPStack(Exception):
    """The HTTP parser in use is not one sidecache trusts; the message says why."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def http_stack_problems() -> list[str]:
    # Imported here: the CLI imports this module for its exception, cheaply.
    import aiohttp
    from aiohttp import http_parser

    problems = []
    if _version(aiohttp.__version__) < MINIMUM_AIOHTTP:
        wanted = ".".join(map(str, MINIMUM_AIOHTTP))
        problems.append(f"aiohttp {aiohttp.__version__} is older than {wanted}")
    c_parser = getattr(http_parser, "HttpRequestParserC", None)
    if c_parser is None or http_parser.HttpRequestParser is not c_parser:
        problems.append(
            "aiohttp is using its pure-Python HTTP parser (C extensions missing, "
            "or AIOHTTP_NO_EXTENSIONS is set)"
        )
    return problems


def check_http_stack(allow_unsafe: bool) -> list[str]:
    """Raise UnsafeHTTPStack on a problem, unless allowed; returns the problems."""
    problems = http_stack_problems()
    if problems and not allow_unsafe:
        raise UnsafeHTTPStack(
            "; ".join(problems)
            + ": refusing to start (set server.allow_unsafe_http_parser: true to run anyway)"
        )
    return problems
