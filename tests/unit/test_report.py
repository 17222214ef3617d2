"""The load test's final table (proxy/loadtest/report.py): which rows it shows."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from proxy.loadtest.metrics import Recorder
from proxy.loadtest.report import TargetResult, table

UPSTREAM: dict[str, float] = {"requests": 10, "coalesced": 0, "errors": 0}
APP: dict[str, float] = {"photo_reads": 4, "bytes_read": 10_000_000, "pool_timeouts": 0}
VALIDATION_LABELS = (
    "fills sent conditional",
    "fills answered 304",
    "etag-only reads from the database",
    "answered 304 without the blob",
)


def rendered(*results: TargetResult) -> dict[str, list[str]]:
    """The table's rows: label -> cells, as printed."""
    out = io.StringIO()
    Console(file=out, width=240).print(table(list(results)))
    rows: dict[str, list[str]] = {}
    for line in out.getvalue().splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def result(
    upstream: dict[str, float] | None, app: dict[str, float] | None, app_etag: bool | None
) -> TargetResult:
    return TargetResult("t", "http://127.0.0.1:1", 1.0, Recorder(), upstream, app, app_etag)


@pytest.mark.parametrize(
    ("upstream", "app", "app_etag", "expected"),
    [
        # The original app: nothing can be revalidated, the rows would be zeros.
        (
            {**UPSTREAM, "revalidations": 0, "revalidated": 0},
            {**APP, "etag_reads": 0, "not_modified": 0},
            False,
            None,
        ),
        # --etag: the rows are shown, zeros included.
        (
            {**UPSTREAM, "revalidations": 0, "revalidated": 0},
            {**APP, "etag_reads": 0, "not_modified": 0},
            True,
            ["0", "0", "0", "0"],
        ),
        (
            {**UPSTREAM, "revalidations": 7, "revalidated": 5},
            {**APP, "etag_reads": 7, "not_modified": 5},
            True,
            ["7", "5", "7", "5"],
        ),
        # Another app than the demo (no app figures): sidecache's own figures say it.
        ({**UPSTREAM, "revalidations": 3, "revalidated": 3}, None, None, ["3", "3", None, None]),
        # A sidecache without these figures, in front of the demo app with --etag.
        (UPSTREAM, {**APP, "etag_reads": 2, "not_modified": 1}, True, ["-", "-", "2", "1"]),
    ],
)
def test_revalidation_rows(
    upstream: dict[str, float],
    app: dict[str, float] | None,
    app_etag: bool | None,
    expected: list[str | None] | None,
) -> None:
    rows = rendered(result(upstream, app, app_etag))
    assert rows["upstream requests"] == ["10"]
    if expected is None:
        assert not any(label in rows for label in VALIDATION_LABELS)
        return
    for label, cell in zip(VALIDATION_LABELS, expected, strict=True):
        assert rows.get(label) == (None if cell is None else [cell]), label


def test_revalidation_rows_side_by_side_with_a_direct_target() -> None:
    through = result(
        {**UPSTREAM, "revalidations": 4, "revalidated": 4},
        {**APP, "etag_reads": 4, "not_modified": 4},
        True,
    )
    direct = result(None, {**APP, "etag_reads": 0, "not_modified": 0}, True)
    rows = rendered(through, direct)
    assert rows["fills answered 304"] == ["4", "-"]
    assert rows["answered 304 without the blob"] == ["4", "0"]
