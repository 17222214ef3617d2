"""Conditional and range requests answered from a stored entry (RFC 9110 13, 14).

Pure: decides 304, 206 or 416 from request header values and the stored
response's validators and length; the handler builds the response.
Imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from proxy.headers import if_none_match_matches


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(
    *,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str,
    last_modified: str | None,
) -> bool:
    """RFC 9110 13.2.2: may a GET/HEAD be answered 304 from this stored response?

    ``If-None-Match`` wins when present; ``If-Modified-Since`` is compared with the
    stored ``Last-Modified`` only (no validator, no 304).
    """
    if if_none_match is not None:
        return if_none_match_matches(if_none_match, etag)
    since = _http_date(if_modified_since)
    modified = _http_date(last_modified)
    return since is not None and modified is not None and modified <= since


@dataclass(frozen=True, slots=True)
class Partial:
    """Serve bytes ``start`` to ``end`` inclusive (206)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """No byte of the range exists (416)."""


RangeAnswer = Partial | Unsatisfiable | None  # None: ignore the header, send it all (200)


def answer_range(
    header: str | None, size: int, *, if_range: str | None = None, etag: str = ""
) -> RangeAnswer:
    """How to answer ``Range`` for a stored body of ``size`` bytes.

    One ``bytes`` range is served; several ranges, other units, a malformed value,
    or an ``If-Range`` that is not this entry's strong ETag mean the whole body
    (RFC 9110 14.2 lets a server ignore ``Range``).
    """
    if header is None:
        return None
    if if_range is not None and (if_range.startswith("W/") or if_range.strip() != etag):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0:
            return Unsatisfiable()
        return Partial(max(0, size - suffix), size - 1) if size else Unsatisfiable()
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        return Unsatisfiable()
    end = int(last) if last else size - 1
    return Partial(start, min(end, size - 1))
