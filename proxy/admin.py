"""``sidecache stats``, ``purge`` and ``explain``: the control port from a terminal.

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
from urllib.parse import urlencode, urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

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
    tables = [summary, routes]
    shadow = stats.get("shadow") or {}
    if shadow.get("routes"):
        tables.append(_shadow_table(shadow))
    return tables


def _shadow_table(shadow: Mapping[str, Any]) -> Table:
    """Shadow routes: what caching would have done (``/stats`` ``shadow``)."""
    index = shadow["index"]
    table = Table(
        title="shadow routes: what caching would have done",
        caption=f"index {index['entries']:,} entries, {_mib(index['bytes'])} of "
        f"{_mib(index['max_bytes'])}; its own memory {_mib(index['overhead_bytes'])} of "
        f"{_mib(index['max_overhead_bytes'])}",
    )
    columns = ("route", "hit rate", "hits", "misses", "stale", "saved requests", "saved")
    for column in (*columns, "not stored"):
        table.add_column(column, justify="right" if column in columns[1:] else "left")
    for name, c in shadow["routes"].items():
        reasons = ", ".join(f"{k} {v:,}" for k, v in c["not_stored"].items()) or "-"
        table.add_row(
            name,
            f"{c['hit_rate']:.1%}",
            *(f"{c[k]:,}" for k in ("hits", "misses", "stale", "saved_requests")),
            _mib(c["saved_bytes"]),
            reasons,
        )
    return table


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


def explain(
    control: str,
    token: str,
    url: str,
    *,
    headers: list[str],
    method: str,
    peer: str | None,
    as_json: bool,
    console: Console,
) -> None:
    """``GET /explain`` for ``url`` with ``headers`` (``Name: value`` each), printed."""
    if not url.strip():
        raise AdminUsageError("URL is empty (an unset variable?)")
    for number, line in enumerate(headers, start=1):
        if ":" not in line:
            raise AdminUsageError(f"-H number {number} must be 'Name: value'")
    params = [("url", url), ("method", method), *(("h", line) for line in headers)]
    if peer:
        params.append(("peer", peer))
    said = call(control, "/explain?" + urlencode(params), token=token)
    try:
        table = explain_table(said)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise AdminError(
            f"{control_url(control)}/explain answered JSON that is not sidecache's ({NOT_CONTROL})"
        ) from None
    if as_json:
        console.print_json(data=said)
        return
    console.print(table)


def explain_table(said: Mapping[str, Any]) -> Table:
    request, decision, outcome = said["request"], said["decision"], said["outcome"]
    # Text, not markup: a path or an ETag may hold "[...]".
    table = Table(title=Text(f"{request['method']} {request['url']}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    key = said.get("key") or {}
    rows = [("headers", ", ".join(request["headers"]) or "-")]
    if "path" in said:
        path = said["path"]
        rows.append(("path", path["normalised"] or f"{path['raw']} (ambiguous)"))
    route = said.get("route")
    if route is not None:
        params = ", ".join(f"{k}={v}" for k, v in route["params"].items())
        rows.append(
            ("route", f"{route['name']} (match {route['match']}{'; ' + params if params else ''})")
        )
    elif "route" in said:
        rows.append(("route", "none"))
    rows.append(("decision", f"{decision['action']}: {decision['reason']}"))
    if decision.get("why"):
        rows.append(("", decision["why"]))
    if decision.get("credentials"):
        rows.append(("credentials", decision["credentials"]))
    if key:
        parts = [f"host {key['host']}", f"target {key['target']}"]
        parts += [f"vary {', '.join(key['vary'])}"] if key["vary"] else []
        parts += ["credentials digest"] if key["credentials"] else []
        rows.append(("key", f"{key['digest'][:16]}… ({'; '.join(parts)})"))
    rows.append(("outcome", f"{outcome['x_cache'] or '-'} ({outcome.get('step', '-')})"))
    rows.append(("", outcome["why"]))
    entries = [("entry", said["entry"])] if said.get("entry") else []
    for worker in said.get("workers", []):
        if not worker["up"]:
            rows.append((f"worker {worker['index']}", "not answering"))
            continue
        got = worker["outcome"]
        rows.append((f"worker {worker['index']}", f"{got['x_cache']} ({got.get('step', '-')})"))
        if worker.get("entry"):
            entries.append((f"worker {worker['index']} entry", worker["entry"]))
    if not entries and decision["action"] == "lookup":
        rows.append(("entry", "none stored"))
    for label, entry in entries:
        rows.extend(_entry_rows(label, entry))
    for label, value in rows:
        table.add_row(label, Text(value))
    return table


def _entry_rows(label: str, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    fresh = entry["fresh_for_s"]
    freshness = f"fresh for {fresh:,.0f} s" if fresh > 0 else f"stale for {-fresh:,.0f} s"
    validators = entry["validators"]
    lifetime = entry["lifetime"]
    return [
        (label, f"{entry['tier']}, status {entry['status']}, {entry['state']}"),
        ("", f"age {entry['age_s']} s, {freshness}"),
        (
            "",
            f"stale-while-revalidate {entry['stale_while_revalidate_s']:g} s "
            f"({entry['stale_while_revalidate_left_s']:g} left), stale-if-error "
            f"{entry['stale_if_error_s']:g} s ({entry['stale_if_error_left_s']:g} left)",
        ),
        (
            "",
            f"ETag {validators['etag'] or '-'}, Last-Modified {validators['last_modified'] or '-'}",
        ),
        (
            "",
            f"{entry['size']['body_bytes']:,} bytes ({entry['size']['charged_bytes']:,} charged)"
            + (f", Vary {', '.join(entry['vary'])}" if entry["vary"] else ""),
        ),
        ("lifetime", f"{lifetime['rule']}: {lifetime['why']}"),
    ]
