"""Conditional and range requests answered from a stored entry (RFC 9110 13, 14).

Pure: decides 412, 304, 206 or 416 from request header values and the stored
response's validators and length; the handler builds the response.
Imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.freshness import parse_http_date
from proxy.headers import if_none_match_matches


def _http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7), or None: a conditional header that is
    not one is ignored (section 13.1.3)."""
    return parse_http_date(value) if value else None


def not_modified(
    *,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str,
    last_modified: str | None,
    date: str | None = None,
) -> bool:
    """RFC 9110 13.2.2: may a GET/HEAD be answered 304 from this stored response?

    ``If-None-Match`` wins when present. ``If-Modified-Since`` is compared with the
    stored ``Last-Modified``, or, without a valid one, with ``date`` (RFC 9111
    section 4.3.2): the stored ``Date``, else the time the entry was stored, as an
    HTTP-date. A representation is never modified after its ``Date`` (RFC 9110
    section 8.8.2.1), so that is safe. Neither: no 304.
    """
    if if_none_match is not None:
        return if_none_match_matches(if_none_match, etag)
    since = _http_date(if_modified_since)
    if since is None:
        return False
    modified = _http_date(last_modified)
    if modified is None:
        modified = _http_date(date)
    return modified is not None and modified <= since


def _strong_match(header: str, etag: str) -> bool:
    """RFC 9110 section 8.8.3.2: strong comparison; a weak tag never matches."""
    if etag.startswith("W/"):
        return False
    return any(c.strip() == etag for c in header.split(",") if not c.strip().startswith("W/"))


def precondition_failed(
    *,
    if_match: str | None,
    if_unmodified_since: str | None,
    etag: str,
    last_modified: str | None,
) -> bool:
    """RFC 9110 13.2.2 steps 1-2, evaluated before ``not_modified``: does the stored
    response fail ``If-Match`` (strong comparison; ``*`` matches, an entry exists),
    or, without ``If-Match``, ``If-Unmodified-Since``? True means ``412``.

    ``If-Unmodified-Since`` is ignored when it is not a date or the entry has no
    ``Last-Modified`` (section 13.1.4).
    """
    if if_match is not None:
        return if_match.strip() != "*" and not _strong_match(if_match, etag)
    since = _http_date(if_unmodified_since)
    modified = _http_date(last_modified)
    return since is not None and modified is not None and modified > since


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
