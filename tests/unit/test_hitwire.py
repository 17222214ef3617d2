"""A plain hit's wire head (``hitwire``) says what ``answer.from_entry`` says."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import hitwire
from proxy.answer import from_entry
from proxy.config import RouteConfig
from proxy.entry import StoredResponse
from proxy.flow import Serve, Served

ROUTE = RouteConfig(name="photo", match="/p/{id}", ttl=60)
OVERRIDE = RouteConfig(name="photo", match="/p/{id}", ttl=60, client_cache_control="max-age=5")
ENTRY = StoredResponse(
    key="k",
    route="photo",
    path="/p/1",
    status=200,
    headers=(
        ("Content-Type", "image/jpeg"),
        ("Cache-Control", "max-age=600"),
        ("Date", "Sat, 28 Nov 2026 10:00:00 GMT"),
        ("X-Name", "café"),
        ("X-Raw", "\udcff"),  # byte 0xff, as the client parser decodes what is not UTF-8
        ("ETag", '"v1"'),
        ("Via", "1.1 sidecache"),
    ),
    body=b"0123456789",
    etag='"v1"',
    stored_at=100.0,
    fresh_until=160.0,
    stale_until=200.0,
    initial_age=3.0,
)
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def parse(wire: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    head, blank, rest = wire.partition(b"\r\n\r\n")
    assert blank and rest == b""
    status, *lines = head.split(b"\r\n")
    pairs = [line.decode("utf-8", "surrogateescape").split(": ", 1) for line in lines]
    return status, [(name, value) for name, value in pairs]


@pytest.mark.parametrize("route", [ROUTE, OVERRIDE], ids=["app-cache-control", "override"])
@pytest.mark.parametrize("now", [100.0, 130.5, 159.9])
def test_the_wire_head_holds_the_headers_of_a_plain_hit(route: RouteConfig, now: float) -> None:
    entry = replace(ENTRY)
    block, has_date = hitwire.wire_head(entry, route)
    assert has_date
    age = int(entry.initial_age + now - entry.stored_at)
    status, headers = parse(block + hitwire.tail(age, int(entry.fresh_until - now)))
    answer = from_entry(Serve(entry, Served.HIT, None), route, NO_HEADERS, now)
    assert status == b"HTTP/1.1 200 OK"
    # The same fields, each once (their order carries no meaning across names).
    assert sorted(headers) == sorted([*answer.headers, ("Content-Length", "10")])
    assert len({name.lower() for name, _ in headers}) == len(headers)
    assert answer.status == 200 and answer.body == entry.body


def test_the_head_is_built_once_per_route_and_follows_a_new_one() -> None:
    entry = replace(ENTRY)
    first, _ = hitwire.wire_head(entry, ROUTE)
    assert hitwire.wire_head(entry, ROUTE)[0] is first
    changed, _ = hitwire.wire_head(entry, OVERRIDE)  # a reload replaced the route
    assert b"Cache-Control: max-age=5\r\n" in changed and changed != first
    # A copy of the entry (a refresh) never carries the old head.
    assert replace(entry, fresh_until=500.0).wire == []


def test_header_bytes_go_out_as_the_app_sent_them() -> None:
    block, _ = hitwire.wire_head(replace(ENTRY), ROUTE)
    assert b"X-Name: caf\xc3\xa9\r\n" in block
    assert b"X-Raw: \xff\r\n" in block


def test_an_entry_without_date_is_dated_per_second() -> None:
    entry = replace(ENTRY, headers=tuple(h for h in ENTRY.headers if h[0] != "Date"))
    _, has_date = hitwire.wire_head(entry, ROUTE)
    assert not has_date
    clock = hitwire.Clock()
    assert clock.date(1795860000.2) == b"Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n"
    assert clock.date(1795860000.9) is clock.date(1795860000.2)
    assert clock.date(1795860001.0) == b"Date: Sat, 28 Nov 2026 10:00:01 GMT\r\n"


@pytest.mark.parametrize(
    ("status", "line"), [(404, b"HTTP/1.1 404 Not Found\r\n"), (299, b"HTTP/1.1 299 \r\n")]
)
def test_status_lines(status: int, line: bytes) -> None:
    assert hitwire.status_line(status) == line


def test_the_size_charged_covers_the_prepared_head() -> None:
    entry = replace(ENTRY)
    before = entry.size
    block, _ = hitwire.wire_head(entry, OVERRIDE)
    assert entry.size == before  # charged when stored, not when first hit
    stored_alone = before - len(block)
    assert stored_alone >= len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers)
