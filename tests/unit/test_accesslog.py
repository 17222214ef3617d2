"""Access log lines from plain values (proxy/accesslog.py): what a line says."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from proxy.accesslog import AccessLog
from proxy.config import DEFAULT_SENSITIVE_QUERY

# Paths and queries as a client may send them (aiohttp hands over the raw target,
# undecoded bytes as lone surrogates).
HOSTILE = [
    '/a"b',
    "/back\\slash\\",
    "/ctl\x00\x01\x1f\x7f\t\n\r",
    "/caf\u00e9/\u65e5\u672c/\U0001f600",
    "/bytes\udcff\udc80",
    '/"},"status":999,"x":{"',
    "/\u2028\u2029",
]


def _lines(mode: str = "json") -> tuple[AccessLog, list[str]]:
    out: list[str] = []
    return AccessLog(mode, DEFAULT_SENSITIVE_QUERY, out.append), out


def _expected(values: dict[str, Any]) -> str:
    """What ``json.dumps`` of the fields writes (the line before it was prepared)."""
    return json.dumps(values, separators=(",", ":"))


@pytest.mark.parametrize("path", HOSTILE)
def test_a_json_line_is_valid_json_for_any_path_and_query(path: str) -> None:
    access, out = _lines()
    access.write(path, "GET", path, "q=" + path.lstrip("/"), 200, path, path, 5, 0.5, 0.25)
    access.write(None, 'M"\\', path, "", 404, "", None, 0, 1.0, None)
    first, second = (json.loads(line) for line in out)
    assert first == {
        "time": first["time"],
        "client": path,
        "method": "GET",
        "path": path,
        "query": first["query"],  # percent-encoded again by the redaction
        "status": 200,
        "cache": path,
        "route": path,
        "bytes": 5,
        "duration_ms": 500.0,
        "upstream_ms": 250.0,
    }
    assert first["query"].startswith("q=") and first["query"].isascii()
    assert second["client"] is None and second["method"] == 'M"\\' and second["path"] == path
    assert second["route"] is None and second["upstream_ms"] is None
    assert second["query"] == "" and second["status"] == 404 and second["duration_ms"] == 1000.0
    # Byte for byte what json.dumps of the same fields gives.
    assert out == [_expected(first), _expected(second)]


def test_json_line_fields_types_and_time() -> None:
    access, out = _lines()
    access.write("10.0.0.1", "GET", "/p", "", 200, "HIT", "photo", 2463568, 0.00287, None)
    line = json.loads(out[0])
    assert list(line) == [
        "time",
        "client",
        "method",
        "path",
        "query",
        "status",
        "cache",
        "route",
        "bytes",
        "duration_ms",
        "upstream_ms",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["time"])
    assert (line["status"], line["bytes"], line["duration_ms"]) == (200, 2463568, 2.87)
    assert isinstance(line["duration_ms"], float) and line["upstream_ms"] is None


@pytest.mark.parametrize("mode", ["json", "text"])
def test_write_redacts_sensitive_query_parameters(mode: str) -> None:
    access, out = _lines(mode)
    access.write(
        "1.2.3.4", "GET", "/p", "a=1&TOKEN=s3cr3t&Password=x%20y&b=", 200, "", None, 0, 0, None
    )
    assert "s3cr3t" not in out[0] and "x%20y" not in out[0]
    expected = "a=1&TOKEN=REDACTED&Password=REDACTED&b="
    if mode == "json":
        assert json.loads(out[0])["query"] == expected
    else:
        assert f" /p?{expected} " in out[0]


def test_text_line_is_unchanged() -> None:
    access, out = _lines("text")
    access.write(
        "10.0.0.1", "GET", "/api/photo/1", "size=9", 200, "MISS", "photo", 1000, 0.01234, 0.0051
    )
    access.write(None, "HEAD", "/x", "", 304, "", None, 0, 0.0004, None)
    assert out == [
        "10.0.0.1 GET /api/photo/1?size=9 200 MISS route=photo bytes=1000 12.3ms upstream=5.1ms",
        "None HEAD /x 304 - route=- bytes=0 0.4ms upstream=-",
    ]


def test_write_does_nothing_when_the_log_is_off() -> None:
    access, out = _lines("off")
    access.write("10.0.0.1", "GET", "/p", "", 200, "HIT", "photo", 1, 0.001, None)
    assert out == []
