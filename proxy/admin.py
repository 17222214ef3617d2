"""``sidecache stats`` and ``sidecache purge``: the control port from a terminal.

Tables for people (rich), ``--json`` for scripts. The control URL and token come
from flags, else ``$SIDECACHE_CONTROL_URL`` / ``$SIDECACHE_CONTROL_TOKEN``.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

DEFAULT_CONTROL_URL = "http://127.0.0.1:9090"
# A /stats answer is a few KiB; a URL that streams something else is cut here.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
NOT_CONTROL = "is it a sidecache control port?"


class AdminError(Exception):
    """The control port could not be used; the message says why (exit 1)."""


class AdminUsageError(AdminError):
    """The command was given a bad argument and sent nothing (exit 2)."""


def control_url(text: str) -> str:
    """``--control`` checked and without a trailing ``/``; AdminUsageError if unusable."""
    expected = f"--control {text!r} is not an http(s) URL (e.g. {DEFAULT_CONTROL_URL})"
    value = text.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise AdminUsageError(expected) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise AdminUsageError(expected)
    return value.rstrip("/")


def _authorization(token: str) -> str:
    if any(not c.isprintable() for c in token):
        raise AdminUsageError("--token contains control characters: it cannot be sent")
    # The control port compares UTF-8 bytes; http.client sends str as Latin-1.
    return f"Bearer {token}".encode().decode("latin-1")


def _http_error(url: str, exc: urllib.error.HTTPError) -> AdminError:
    try:
        raw = exc.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        detail = json.loads(raw)["error"]
    except (ValueError, TypeError, KeyError):
        return AdminError(f"{url}: {exc.code} {exc.reason} ({NOT_CONTROL})")
    return AdminError(f"{url}: {exc.code} {' '.join(str(detail).split())}")


def call(
    control: str, path: str, *, token: str = "", body: Mapping[str, object] | None = None
) -> Any:
    url = control_url(control) + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    token = token.strip()
    if token:
        request.add_header("Authorization", _authorization(token))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AdminError(f"cannot reach the control port at {url}: {reason}") from None
    try:
        if len(raw) > MAX_ANSWER_BYTES:
            raise ValueError("too large")
        return json.loads(raw)
    except ValueError:
        raise AdminError(f"{url} did not answer with JSON ({NOT_CONTROL})") from None


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


def stats_tables(stats: Mapping[str, Any]) -> list[Table]:
    cache, upstream = stats["cache"], stats["upstream"]
    summary = Table(title=f"sidecache, up {stats['uptime_s']:,.0f} s", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rows = [
        ("hit rate", f"{cache['hit_rate']:.1%}"),
        ("hits / misses / stale / bypass",
         f"{cache['hits']:,} / {cache['misses']:,} / {cache['stale']:,} / {cache['bypass']:,}"),
        ("entries", f"{cache['entries']:,}"),
        ("bytes", f"{_mib(cache['bytes'])} of {_mib(cache['max_bytes'])}"),
        ("evictions / expired / purged",
         f"{cache['evictions']:,} / {cache['expired']:,} / {cache.get('purged', 0):,}"),
        ("upstream requests / errors", f"{upstream['requests']:,} / {upstream['errors']:,}"),
        ("upstream in flight / queued", f"{upstream['in_flight']} / {upstream['queued']}"),
        ("coalesced / rejected", f"{upstream['coalesced']:,} / {upstream.get('rejected', 0):,}"),
    ]  # fmt: skip
    memory = stats.get("memory")  # absent from an older release's answer
    if memory is not None and memory["rss_bytes"] is not None:
        limit = memory["limit_bytes"]
        rows.append((
            "resident memory",
            f"{_mib(memory['rss_bytes'])}, no limit" if limit is None else
            f"{_mib(memory['rss_bytes'])} of {_mib(limit)} ({_mib(memory['headroom_bytes'])} left)",
        ))  # fmt: skip
    for label, value in rows:
        summary.add_row(label, value)
    routes = Table(title="routes")
    for column in ("route", "hits", "misses", "stale", "bypass"):
        routes.add_column(column, justify="left" if column == "route" else "right")
    for name, c in stats["routes"].items():
        routes.add_row(name, *(f"{c[k]:,}" for k in ("hits", "misses", "stale", "bypass")))
    return [summary, routes]


def show_stats(control: str, token: str, as_json: bool, console: Console) -> None:
    stats = call(control, "/stats", token=token)
    try:
        tables = stats_tables(stats)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise AdminError(
            f"{control_url(control)}/stats answered JSON that is not sidecache's ({NOT_CONTROL})"
        ) from None
    if as_json:
        console.print_json(data=stats)
        return
    for table in tables:
        console.print(table)


def purge(
    control: str,
    token: str,
    *,
    path: str | None,
    route: str | None,
    everything: bool,
    as_json: bool,
    console: Console,
) -> None:
    if path is not None and not path.strip():
        raise AdminUsageError("PATH is empty (an unset variable?); everything is --all")
    if route is not None and not route.strip():
        raise AdminUsageError("--route is empty (an unset variable?); everything is --all")
    chosen = [x for x in (path is not None, route is not None, everything) if x]
    if len(chosen) != 1:
        raise AdminUsageError("name exactly one of: PATH, --route NAME, --all")
    body: dict[str, object] = (
        {"path": path}
        if path is not None
        else {"route": route}
        if route is not None
        else {"all": True}
    )
    result = call(control, "/purge", token=token, body=body)
    if not isinstance(result, dict) or not isinstance(result.get("purged"), int):
        raise AdminError(
            f"{control_url(control)}/purge answered JSON that is not sidecache's ({NOT_CONTROL})"
        )
    if as_json:
        console.print_json(data=result)
    else:
        what = path or (f"route {route}" if route else "everything")
        console.print(f"purged {result['purged']} entries ({what})")
