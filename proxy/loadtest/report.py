"""The load test's results: side-by-side table, JSON figures and an HTML chart.

The chart is a self-contained HTML page with inline SVG (no script, no remote
asset): requests per second and p95 latency over time, one line per target.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from proxy.loadtest.metrics import Recorder

COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")


@dataclass
class TargetResult:
    name: str
    url: str
    duration: float
    recorder: Recorder
    upstream: dict[str, float] | None = None  # sidecache /stats deltas
    app: dict[str, float] | None = None  # demo app /_demo/stats deltas
    app_etag: bool | None = None  # the demo app runs with --etag (None: not known)
    notes: list[str] = field(default_factory=list)  # figures left out, and why
    summary: dict[str, object] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = self.recorder.summary(self.duration)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.url,
            "duration_s": round(self.duration, 2),
            **self.summary,
            "upstream": self.upstream,
            "app": self.app,
            "app_etag": self.app_etag,
            "notes": self.notes,
            "series": self.recorder.series(),
        }


def deltas(
    before: dict[str, object] | None, after: dict[str, object] | None, keys: dict[str, str]
) -> dict[str, float] | None:
    """``after - before`` for dotted ``keys`` (``"upstream.requests"``), renamed."""
    if before is None or after is None:
        return None
    out: dict[str, float] = {}
    for name, dotted in keys.items():
        a, b = _dig(after, dotted), _dig(before, dotted)
        if isinstance(a, int | float) and isinstance(b, int | float):
            out[name] = a - b
    return out


def _dig(data: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}" if value < 100 else f"{value:,.0f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return str(value)


VALIDATION_UPSTREAM_ROWS = (
    ("revalidations", "fills sent conditional"),
    ("revalidated", "fills answered 304"),
)
VALIDATION_APP_ROWS = (
    ("etag_reads", "etag-only reads from the database", 1.0, ""),
    ("not_modified", "answered 304 without the blob", 1.0, ""),
)


def shows_validation(results: list[TargetResult]) -> bool:
    """Whether the table shows the revalidation rows: when the app sends ETags
    (``--etag``), or when any of their figures is not zero. Without validators
    nothing can be revalidated, and rows of zeros would only be noise."""
    figures = (
        *(key for key, _ in VALIDATION_UPSTREAM_ROWS),
        *(key for key, *_ in VALIDATION_APP_ROWS),
    )
    return any(
        r.app_etag or any((r.upstream or {}).get(k) or (r.app or {}).get(k) for k in figures)
        for r in results
    )


def table(results: list[TargetResult]) -> Table:
    t = Table(title="sidecache loadtest", show_lines=False)
    t.add_column("")
    for r in results:
        t.add_column(f"{r.name}\n{r.url}", justify="right")
    s = [r.summary for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("duration", [_fmt(r.duration, " s") for r in results]),
        ("requests", [_fmt(x["requests"]) for x in s]),
        ("requests/s", [_fmt(x["requests_per_s"]) for x in s]),
        ("errors", [_fmt(x["errors"]) for x in s]),
        (
            "errors by kind",
            [", ".join(f"{k} {v}" for k, v in x["errors_by_kind"].items()) or "-" for x in s],  # type: ignore[attr-defined]
        ),
        ("hit rate (X-Cache)", [_pct(x["hit_rate"]) for x in s]),
        ("latency p50", [_fmt(x["p50_ms"], " ms") for x in s]),
        ("latency p95", [_fmt(x["p95_ms"], " ms") for x in s]),
        ("latency p99", [_fmt(x["p99_ms"], " ms") for x in s]),
        ("data received", [_fmt(int(x["bytes"]) / 1e6, " MB") for x in s]),  # type: ignore[call-overload]
    ]
    validation = shows_validation(results)
    if any(r.upstream for r in results):
        for key, label in (
            ("requests", "upstream requests"),
            ("coalesced", "coalesced waits"),
            ("errors", "upstream errors"),
            *(VALIDATION_UPSTREAM_ROWS if validation else ()),
        ):
            rows.append((label, [_fmt((r.upstream or {}).get(key)) for r in results]))
    if any(r.app for r in results):
        for key, label, scale, unit in (
            ("photo_reads", "photo reads from the database", 1.0, ""),
            ("bytes_read", "data read from the database", 1e-6, " MB"),
            ("pool_timeouts", "database pool timeouts", 1.0, ""),
            *(VALIDATION_APP_ROWS if validation else ()),
        ):
            rows.append(
                (
                    label,
                    [
                        _fmt(int(r.app[key] * scale) if r.app and key in r.app else None, unit)
                        for r in results
                    ],
                )
            )
    if any(r.notes for r in results):
        rows.append(("notes", ["\n".join(r.notes) or "-" for r in results]))
    for label, cells in rows:
        t.add_row(label, *cells)
    return t


def _pct(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, float) else "-"


def write(path: Path, results: list[TargetResult]) -> tuple[Path, Path]:
    """Write ``<path>.json`` and ``<path>.html``; returns both paths."""
    base = path.with_suffix("") if path.suffix in (".json", ".html") else path
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, html_path = base.with_suffix(".json"), base.with_suffix(".html")
    json_path.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    html_path.write_text(chart_page(results))
    return json_path, html_path


def _svg(title: str, unit: str, lines: list[tuple[str, str, list[float]]]) -> str:
    w, h, left, bottom, top = 760, 260, 60, 30, 30
    longest = max((len(v) for _, _, v in lines), default=1) or 1
    peak = max((max(v) for _, _, v in lines if v), default=1.0) or 1.0
    sx = (w - left - 10) / max(1, longest - 1)
    sy = (h - top - bottom) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 4}" font-size="11" text-anchor="end">{peak:,.0f}</text>',
        f'<text x="{left - 6}" y="{h - bottom}" font-size="11" text-anchor="end">0</text>',
        f'<text x="{w - 10}" y="{h - 8}" font-size="11" text-anchor="end">{longest - 1} s</text>',
        f'<text x="12" y="{(h - bottom + top) // 2}" font-size="11" '
        f'transform="rotate(-90 12 {(h - bottom + top) // 2})">{html.escape(unit)}</text>',
    ]
    for i, (name, colour, values) in enumerate(lines):
        points = " ".join(
            f"{left + x * sx:.1f},{h - bottom - v * sy:.1f}" for x, v in enumerate(values)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        parts.append(
            f'<text x="{w - 260 + 130 * i}" y="18" font-size="12" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def chart_page(results: list[TargetResult]) -> str:
    throughput = [
        (r.name, COLOURS[i % len(COLOURS)], [float(p["requests"]) for p in r.recorder.series()])
        for i, r in enumerate(results)
    ]
    latency = [
        (r.name, COLOURS[i % len(COLOURS)], [p["p95_ms"] for p in r.recorder.series()])
        for i, r in enumerate(results)
    ]
    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{html.escape(r.url)}</td>"
        f"<td>{r.summary['requests']}</td><td>{r.summary['errors']}</td>"
        f"<td>{_pct(r.summary['hit_rate'])}</td><td>{r.summary['p50_ms']}</td>"
        f"<td>{r.summary['p95_ms']}</td><td>{r.summary['p99_ms']}</td></tr>"
        for r in results
    )
    notes = "".join(
        f"<p>{html.escape(r.name)}: {html.escape(note)}</p>" for r in results for note in r.notes
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>sidecache loadtest</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:right}"
        "</style></head><body><h1>sidecache loadtest</h1>"
        "<table><tr><th>target</th><th>url</th><th>requests</th><th>errors</th>"
        f"<th>hit rate</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>{rows}</table>"
        f"{notes}"
        f"{_svg('Requests per second', 'req/s', throughput)}"
        f"{_svg('p95 latency per second', 'ms', latency)}"
        "</body></html>\n"
    )
