"""Answers built from an entry (proxy/answer.py): headers said on top of it, 304,
412, 206 and 416, and the head of a streamed miss."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.answer import Answer, from_entry, streamed_head
from proxy.config import RouteConfig
from proxy.entry import StoredResponse
from proxy.flow import Head, Serve, Served, Stream

ROUTE = RouteConfig(name="photo", match="/p/{id}", ttl=60)
OVERRIDE = RouteConfig(name="photo", match="/p/{id}", ttl=60, client_cache_control="max-age=5")
LM = "Tue, 24 Nov 2026 10:00:00 GMT"
HEADERS = (
    ("Content-Type", "image/jpeg"),
    ("Cache-Control", "max-age=600"),
    ("Last-Modified", LM),
    ("Server", "app"),
    ("X-Custom", "1"),
    ("ETag", '"v1"'),
    ("Via", "1.1 sidecache"),
)
ENTRY = StoredResponse(
    key="k",
    route="photo",
    path="/p/1",
    status=200,
    headers=HEADERS,
    body=b"0123456789",
    etag='"v1"',
    stored_at=100.0,
    fresh_until=160.0,
    stale_until=200.0,
    initial_age=3.0,
)


def req(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict((k.replace("_", "-"), v) for k, v in headers.items()))


def said(answer: Answer) -> dict[str, str]:
    """What the cache added: Age, X-Cache, Cache-Status (and Content-Range)."""
    ours = ("Age", "X-Cache", "Cache-Status", "Content-Range")
    return {n: v for n, v in answer.headers if n in ours}


@pytest.mark.parametrize(
    ("serve", "now", "expected"),
    [
        (
            Serve(ENTRY),
            110.0,
            {"Age": "13", "X-Cache": "HIT", "Cache-Status": "sidecache; hit; ttl=50"},
        ),
        (
            Serve(ENTRY, Served.HIT, "coalesced"),
            110.0,
            {
                "Age": "13",
                "X-Cache": "HIT",
                "Cache-Status": "sidecache; hit; ttl=50; detail=coalesced",
            },
        ),
        (
            Serve(ENTRY, Served.STALE, "upstream-503"),
            170.0,
            {
                "Age": "73",
                "X-Cache": "STALE",
                "Cache-Status": "sidecache; hit; fwd=stale; ttl=-10; detail=upstream-503",
            },
        ),
        (
            Serve(ENTRY, Served.MISS),
            100.0,
            {
                "Age": "3",
                "X-Cache": "MISS",
                "Cache-Status": "sidecache; fwd=uri-miss; fwd-status=200; stored",
            },
        ),
        (
            Serve(ENTRY, Served.REVALIDATED),
            100.0,
            {
                "Age": "3",
                "X-Cache": "HIT",
                "Cache-Status": "sidecache; fwd=stale; fwd-status=304; ttl=60",
            },
        ),
    ],
)
def test_what_an_answer_from_an_entry_says(
    serve: Serve, now: float, expected: dict[str, str]
) -> None:
    answer = from_entry(serve, ROUTE, req(), now)
    assert (answer.status, answer.body) == (200, b"0123456789")
    assert answer.headers[: len(HEADERS)] == list(HEADERS)  # the entry's, as stored
    assert said(answer) == expected


def test_the_routes_client_cache_control_replaces_the_apps() -> None:
    answer = from_entry(Serve(ENTRY), OVERRIDE, req(), 110.0)
    assert [v for n, v in answer.headers if n.lower() == "cache-control"] == ["max-age=5"]
    not_modified = from_entry(Serve(ENTRY), OVERRIDE, req(If_None_Match='"v1"'), 110.0)
    assert ("Cache-Control", "max-age=5") in not_modified.headers


def test_streamed_head_of_a_miss() -> None:
    head = Head(
        200, "OK", (("Content-Encoding", "gzip"), ("Cache-Control", "max-age=9")), 4, True, 0.1
    )
    headers = streamed_head(Stream(head, "stale"), OVERRIDE)
    assert headers == [
        ("Content-Encoding", "gzip"),
        ("Vary", "Accept-Encoding"),  # keyed on it: said to caches in front too
        ("Via", "1.1 sidecache"),
        ("Cache-Control", "max-age=5"),
        ("X-Cache", "MISS"),
        ("Cache-Status", "sidecache; fwd=stale; fwd-status=200"),
    ]
    unstorable = Head(200, "OK", (("Cache-Control", "no-store"),), None, False, 0.1)
    headers = streamed_head(Stream(unstorable, "uri-miss"), OVERRIDE)
    assert ("Cache-Control", "no-store") in headers  # the override is for cacheable answers


VALIDATORS_ONLY = [
    ("Cache-Control", "max-age=600"),
    ("Server", "app"),
    ("ETag", '"v1"'),
    ("Via", "1.1 sidecache"),
    ("Age", "13"),
    ("X-Cache", "HIT"),
    ("Cache-Status", "sidecache; hit; ttl=50"),
]


@pytest.mark.parametrize(
    ("headers", "status", "kept", "body", "range_said"),
    [
        ({"If-None-Match": '"v1"'}, 304, VALIDATORS_ONLY, None, None),
        ({"If-None-Match": 'W/"v1", "other"'}, 304, VALIDATORS_ONLY, None, None),
        ({"If-None-Match": '"v2"'}, 200, None, b"0123456789", None),
        ({"If-Modified-Since": LM}, 304, VALIDATORS_ONLY, None, None),
        ({"If-Modified-Since": "Tue, 24 Nov 2026 09:00:00 GMT"}, 200, None, b"0123456789", None),
        ({"If-Match": '"v2"'}, 412, VALIDATORS_ONLY, None, None),
        ({"If-Match": '"v2"', "If-None-Match": '"v1"'}, 412, VALIDATORS_ONLY, None, None),
        (
            {"If-Unmodified-Since": "Tue, 24 Nov 2026 09:00:00 GMT"},
            412,
            VALIDATORS_ONLY,
            None,
            None,
        ),
        ({"Range": "bytes=2-4"}, 206, None, b"234", "bytes 2-4/10"),
        ({"Range": "bytes=-3"}, 206, None, b"789", "bytes 7-9/10"),
        ({"Range": "bytes=20-"}, 416, None, None, "bytes */10"),
        ({"Range": "bytes=2-4", "If-Range": '"v2"'}, 200, None, b"0123456789", None),
        ({"Range": "bytes=2-4", "If-Range": '"v1"'}, 206, None, b"234", "bytes 2-4/10"),
    ],
)
def test_conditional_and_range_answers(
    headers: dict[str, str],
    status: int,
    kept: list[tuple[str, str]] | None,
    body: bytes | None,
    range_said: str | None,
) -> None:
    answer = from_entry(Serve(ENTRY), ROUTE, CIMultiDictProxy(CIMultiDict(headers)), 110.0)
    assert answer.status == status
    assert (bytes(answer.body) if answer.body is not None else None) == body
    if kept is not None:
        assert answer.headers == kept
    assert dict(answer.headers).get("Content-Range") == range_said


@pytest.mark.parametrize(
    ("since", "status"),
    [("Tue, 24 Nov 2026 12:00:00 GMT", 304), ("Tue, 24 Nov 2026 11:00:00 GMT", 200)],
)
def test_if_modified_since_without_last_modified_is_compared_with_date(
    since: str, status: int
) -> None:
    """RFC 9111 section 4.3.2."""
    dated = replace(
        ENTRY,
        headers=(("Date", "Tue, 24 Nov 2026 12:00:00 GMT"), ("ETag", '"v1"')),
    )
    answer = from_entry(Serve(dated), ROUTE, req(If_Modified_Since=since), 110.0)
    assert answer.status == status


def test_a_range_on_an_entry_that_is_not_200_is_ignored() -> None:
    answer = from_entry(Serve(replace(ENTRY, status=203)), ROUTE, req(Range="bytes=0-1"), 110.0)
    assert (answer.status, answer.body) == (203, b"0123456789")
