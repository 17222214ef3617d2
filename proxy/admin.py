"""``sidecache stats`` and ``sidecache purge``: the control port from a terminal.

Tables for people (rich), ``--json`` for scripts. The control URL and token come
from flags, else ``$SIDECACHE_CONTROL_URL`` / ``$SIDECACHE_CONTROL_TOKEN``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_CONTROL_URL = "http://127.0.0.1:9090"


class AdminError(Exception):
    """The control port could not be used; the message says why."""


def call(
    control: str, path: str, *, token: str = "", body: Mapping[str, object] | None = None
) -> Any:
    url = control.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise AdminError(f"{url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the control port at {url}: {reason}") from None


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
    if as_json:
        console.print_json(data=stats)
        return
    for table in stats_tables(stats):
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
    chosen = [x for x in (path is not None, route is not None, everything) if x]
    if len(chosen) != 1:
        raise AdminError("name exactly one of: PATH, --route NAME, --all")
    body: dict[str, object] = (
        {"path": path} if path is not None else {"route": route} if route else {"all": True}
    )
    result = call(control, "/purge", token=token, body=body)
    if as_json:
        console.print_json(data=result)
    else:
        what = path or (f"route {route}" if route else "everything")
        console.print(f"purged {result['purged']} entries ({what})")
