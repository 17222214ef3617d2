"""Driving a load test: targets in turn, live progress, control-port deltas, report."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live

from proxy.loadtest.crowd import Crowd, LoadOptions
from proxy.loadtest.display import progress
from proxy.loadtest.report import TargetResult, deltas, table, write

UPSTREAM_KEYS = {
    "requests": "upstream.requests",
    "coalesced": "upstream.coalesced",
    "errors": "upstream.errors",
    "revalidations": "upstream.revalidations",
    "revalidated": "upstream.revalidated",
    "hits": "cache.hits",
    "misses": "cache.misses",
}
APP_KEYS = {
    "photo_reads": "photo_reads",
    "bytes_read": "bytes_read",
    "pool_timeouts": "pool_timeouts",
    "etag_reads": "etag_reads",
    "not_modified": "not_modified",
}


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    control: str | None = None  # sidecache control URL, for upstream figures


async def get_json(url: str) -> dict[str, Any] | str:
    """The JSON object at ``url``, or why it could not be had."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as r,
        ):
            if r.status != 200:
                return f"HTTP {r.status}"
            data = await r.json(content_type=None)
    except TimeoutError:
        return "no answer within 5 s"
    except aiohttp.ClientError as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    except ValueError:
        return "the answer is not JSON"
    return data if isinstance(data, dict) else "the answer is not a JSON object"


class Figures:
    """Before/after snapshots of one stats URL; a failure becomes a note, once.

    JSON without any of the expected figures (another service's stats, a health
    page) is a failure too: its deltas would be an empty table, not figures.
    """

    def __init__(self, url: str | None, what: str, keys: dict[str, str], notes: list[str]) -> None:
        self.url, self.what, self.keys, self.notes = url, what, keys, notes

    async def take(self) -> dict[str, Any] | None:
        if self.url is None:
            return None
        got = await get_json(self.url)
        if isinstance(got, dict):
            if deltas(got, got, self.keys):  # a zero for each expected figure present
                return got
            names = ", ".join(self.keys.values())
            note = f"{self.what} left out: {self.url} has none of the expected figures ({names})"
        else:
            note = f"{self.what} left out: cannot read {self.url} ({got})"
        print(f"sidecache loadtest: {note}", file=sys.stderr, flush=True)
        self.notes.append(note)
        self.url = None  # one failure is enough: the deltas are gone
        return None


async def run_target(
    target: Target,
    options: LoadOptions,
    *,
    app_stats: str | None,
    console: Console,
    show_progress: bool,
) -> TargetResult:
    control_stats = f"{target.control.rstrip('/')}/stats" if target.control else None
    notes: list[str] = []
    ctl = Figures(control_stats, "sidecache's upstream figures (--control)", UPSTREAM_KEYS, notes)
    app = Figures(app_stats, "the app's database figures (--app-stats)", APP_KEYS, notes)
    before_ctl, before_app = await ctl.take(), await app.take()
    crowd = Crowd(target.url, options)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, crowd.stop)
    try:
        if show_progress:
            with Live(progress(crowd, target.name), console=console, refresh_per_second=4) as live:
                runner = asyncio.create_task(crowd.run())
                while not runner.done():
                    await asyncio.wait({runner}, timeout=0.5)
                    live.update(progress(crowd, target.name))
                await runner
        else:
            await crowd.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    if crowd.empty_galleries:
        notes.append(
            f"no images (<img src=...>) on {', '.join(sorted(crowd.empty_galleries))}: "
            "users only loaded the page, once a screenful's time (--rate)"
        )
    after_ctl, after_app = await ctl.take(), await app.take()
    return TargetResult(
        target.name,
        target.url,
        crowd.elapsed,
        crowd.recorder,
        upstream=deltas(before_ctl, after_ctl, UPSTREAM_KEYS),
        app=deltas(before_app, after_app, APP_KEYS),
        app_etag=_flag(after_app, "etag"),
        notes=notes,
    )


def _flag(stats: dict[str, Any] | None, name: str) -> bool | None:
    value = stats.get(name) if stats is not None else None
    return value if isinstance(value, bool) else None


async def run_loadtest(
    targets: list[Target],
    options: LoadOptions,
    *,
    app_stats: str | None = None,
    report: Path | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> list[TargetResult]:
    console = console or Console()
    results = []
    for target in targets:
        results.append(
            await run_target(
                target, options, app_stats=app_stats, console=console, show_progress=show_progress
            )
        )
    console.print(table(results))
    if report is not None:
        json_path, html_path = write(report, results)
        console.print(f"report: {json_path} and {html_path}")
    return results
