"""The flow's decisions (proxy/flow.py): (entry times, headers, now) -> decision."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import RouteConfig
from proxy.entry import Headers, StoredResponse
from proxy.flow import (
    Fail,
    Failure,
    Fetch,
    FillResult,
    First,
    Forward,
    Head,
    Keep,
    Lead,
    OnLookup,
    Pass,
    Refresh,
    Refuse,
    Revalidate,
    Serve,
    Served,
    Source,
    StaleWhileRevalidate,
    Stored,
    Stream,
    follow_result,
    lead_result,
    on_failure,
    on_head,
    on_lookup,
    on_response,
    on_shared,
    refreshed_headers,
)
from proxy.policy import Freshness, Lookup, NoStore, freshness, variant_of

# ttl 10 s, then 5 s of stale-while-revalidate, 30 s of stale-if-error: stored at
# 100, fresh until 110, served stale while refreshed until 115, on errors until 140.
ROUTE = RouteConfig(
    name="photo", match="/p/{id}", ttl=10, stale_while_revalidate=5, stale_if_error=30
)
LOOKUP = Lookup(ROUTE, "photo\nh\n/p/1", "/p/1", "/p/1", False)
RANGE = LOOKUP._replace(partial=True)
ETAG, LM = '"v1"', "Tue, 24 Nov 2026 10:00:00 GMT"


def entry(*, etag: str | None = None, last_modified: str | None = None) -> StoredResponse:
    headers: list[tuple[str, str]] = [("Content-Type", "image/jpeg")]
    if last_modified is not None:
        headers.append(("Last-Modified", last_modified))
    headers += [("ETag", etag or '"sc-computed"'), ("Via", "1.1 sidecache")]
    return StoredResponse(
        key=LOOKUP.key,
        route="photo",
        path="/p/1",
        status=200,
        headers=tuple(headers),
        body=b"body",
        etag=etag or '"sc-computed"',
        stored_at=100.0,
        fresh_until=110.0,
        stale_until=140.0,
        origin_etag=etag,
        last_modified=last_modified,
    )


def req(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict((k.replace("_", "-"), v) for k, v in headers.items()))


PLAIN = entry()
TAGGED = entry(etag=ETAG, last_modified=LM)
INM = ("If-None-Match", ETAG)
IMS = ("If-Modified-Since", LM)


@pytest.mark.parametrize(
    ("found", "lookup", "headers", "now", "expected"),
    [
        (None, LOOKUP, req(), 100, Fetch(None, (), Lead.STREAM)),
        (None, LOOKUP, req(If_Match=ETAG), 100, Fetch(None, (), Lead.FROM_ENTRY)),
        (None, LOOKUP, req(If_Unmodified_Since=LM), 100, Fetch(None, (), Lead.FROM_ENTRY)),
        (None, RANGE, req(Range="bytes=0-1"), 100, Forward("uri-miss", "range")),
        # Nothing stored: the client's own conditions go to the app.
        (None, LOOKUP, req(If_None_Match=ETAG), 100, Fetch(None, (INM,), Lead.STREAM)),
        (None, LOOKUP, req(If_Modified_Since=LM), 100, Fetch(None, (IMS,), Lead.STREAM)),
        (
            None,
            LOOKUP,
            req(If_None_Match=ETAG, If_Match="*"),
            100,
            Fetch(None, (), Lead.FROM_ENTRY),
        ),
        # Something stored: the cache validates its own, the client's are answered from it.
        (PLAIN, LOOKUP, req(If_None_Match=ETAG), 120, Fetch(PLAIN, (), Lead.STREAM)),
        (
            TAGGED,
            LOOKUP,
            req(If_None_Match='"x"'),
            120,
            Revalidate(TAGGED, (INM, IMS), Lead.STREAM),
        ),
        (PLAIN, LOOKUP, req(), 100, Serve(PLAIN)),
        (PLAIN, LOOKUP, req(), 109.9, Serve(PLAIN)),
        (PLAIN, RANGE, req(Range="bytes=0-1"), 105, Serve(PLAIN)),  # a fresh entry serves parts
        (PLAIN, LOOKUP, req(), 110, StaleWhileRevalidate(PLAIN, ())),
        (TAGGED, LOOKUP, req(), 114.9, StaleWhileRevalidate(TAGGED, (INM, IMS))),
        (PLAIN, RANGE, req(), 112, StaleWhileRevalidate(PLAIN, ())),
        (PLAIN, LOOKUP, req(), 115, Fetch(PLAIN, (), Lead.STREAM)),
        (PLAIN, LOOKUP, req(If_Match="*"), 120, Fetch(PLAIN, (), Lead.FROM_ENTRY)),
        (TAGGED, LOOKUP, req(), 115, Revalidate(TAGGED, (INM, IMS), Lead.STREAM)),
        (TAGGED, LOOKUP, req(If_Match=ETAG), 139, Revalidate(TAGGED, (INM, IMS), Lead.FROM_ENTRY)),
        (
            entry(last_modified=LM),
            LOOKUP,
            req(),
            120,
            Revalidate(entry(last_modified=LM), (IMS,), Lead.STREAM),
        ),
        (entry(etag=ETAG), LOOKUP, req(), 120, Revalidate(entry(etag=ETAG), (INM,), Lead.STREAM)),
        (TAGGED, RANGE, req(), 120, Forward("uri-miss", "range")),
    ],
)
def test_on_lookup(
    found: StoredResponse | None,
    lookup: Lookup,
    headers: CIMultiDictProxy[str],
    now: float,
    expected: OnLookup,
) -> None:
    assert on_lookup(found, lookup, headers, now) == expected


def test_a_computed_etag_is_never_a_validator_sent_to_the_app() -> None:
    step = on_lookup(PLAIN, LOOKUP, req(), 120)
    assert PLAIN.etag.startswith('"sc-') and step == Fetch(PLAIN, (), Lead.STREAM)


FRESH_SHARED = replace(TAGGED, fresh_until=200.0)


@pytest.mark.parametrize(
    ("found", "step", "expected"),
    [
        (None, Fetch(None, (), Lead.STREAM), Fetch(None, (), Lead.STREAM)),
        (FRESH_SHARED, Fetch(None, (), Lead.STREAM), Serve(FRESH_SHARED, Served.HIT, "shared")),
        (FRESH_SHARED, Fetch(PLAIN, (), Lead.STREAM), Serve(FRESH_SHARED, Served.HIT, "shared")),
        # A stale in-process entry keeps its decision...
        (TAGGED, Fetch(PLAIN, (), Lead.STREAM), Fetch(PLAIN, (), Lead.STREAM)),
        # ... without one, the shared tier's stale entry is decided on.
        (TAGGED, Fetch(None, (), Lead.STREAM), Revalidate(TAGGED, (INM, IMS), Lead.STREAM)),
    ],
)
def test_on_shared(found: StoredResponse | None, step: Fetch, expected: OnLookup) -> None:
    assert on_shared(found, step, LOOKUP, req(), 120) == expected


@pytest.mark.parametrize(
    ("status", "headers", "length", "revalidating", "expected"),
    [
        (200, (), 4, None, Keep()),
        (200, (), 4, TAGGED, Keep()),  # a new representation replaces the entry
        (200, (("Set-Cookie", "a=1"),), 4, None, Refuse(NoStore.SET_COOKIE)),
        (200, (), 10**9, None, Refuse(NoStore.TOO_LARGE)),
        (502, (), 4, None, Refuse(NoStore.STATUS)),
        (503, (), 4, TAGGED, Refuse(NoStore.STATUS)),
        # A 304 to the client's own conditions: relayed, never stored.
        (304, (), None, None, Refuse(NoStore.STATUS)),
        (
            304,
            (("Date", "Wed, 25 Nov 2026 10:00:00 GMT"),),
            None,
            TAGGED,
            Refresh(
                TAGGED, refreshed_headers(TAGGED, (("Date", "Wed, 25 Nov 2026 10:00:00 GMT"),))
            ),
        ),
        # The refreshed response must still be storable.
        (304, (("Cache-Control", "no-store"),), None, TAGGED, Refuse(NoStore.NO_STORE)),
        (304, (("Set-Cookie", "a=1"),), None, TAGGED, Refuse(NoStore.SET_COOKIE)),
    ],
)
def test_on_response(
    status: int,
    headers: Headers,
    length: int | None,
    revalidating: StoredResponse | None,
    expected: Keep | Refresh | Refuse,
) -> None:
    got = on_response(
        LOOKUP,
        status,
        headers,
        content_length=length,
        max_object_bytes=1000,
        revalidating=revalidating,
    )
    assert got == expected


def test_a_304_to_an_authorized_revalidation_must_say_it_may_be_shared() -> None:
    """RFC 9111 section 3.5, on the refreshed headers as on any answer."""
    authorized = LOOKUP._replace(authorized=True)

    def refresh(headers: Headers) -> Keep | Refresh | Refuse:
        return on_response(
            authorized,
            304,
            headers,
            content_length=None,
            max_object_bytes=1000,
            revalidating=TAGGED,
        )

    assert refresh(()) == Refuse(NoStore.AUTHORIZATION)
    public = (("Cache-Control", "public, max-age=60"),)
    assert refresh(public) == Refresh(TAGGED, refreshed_headers(TAGGED, public))


def head(status: int) -> Head:
    return Head(status, "OK", (("Content-Type", "image/jpeg"),), 4, status == 200, 0.01)


@pytest.mark.parametrize(
    ("first", "stale", "now", "expected"),
    [
        (head(200), None, 120, Stream(head(200), "uri-miss")),
        (head(200), PLAIN, 120, Stream(head(200), "stale")),
        (head(503), None, 120, Stream(head(503), "uri-miss")),
        (head(503), PLAIN, 120, Serve(PLAIN, Served.STALE, "upstream-503")),
        (head(500), PLAIN, 140, Stream(head(500), "stale")),  # past stale_if_error
        (head(404), PLAIN, 120, Stream(head(404), "stale")),  # not an error of the app's
        (Stored(TAGGED, Source.SHARED), None, 120, Serve(TAGGED, Served.HIT, "shared")),
        (Stored(TAGGED, Source.REFRESHED, 0.01), TAGGED, 120, Serve(TAGGED, Served.REVALIDATED)),
    ],
)
def test_on_head(
    first: First, stale: StoredResponse | None, now: float, expected: Stream | Serve
) -> None:
    assert on_head(first, stale, ROUTE, now) == expected


@pytest.mark.parametrize(
    ("result", "stale", "now", "leader", "follower"),
    [
        (Stored(TAGGED), None, 120, Serve(TAGGED, Served.MISS), Serve(TAGGED, detail="coalesced")),
        (
            Stored(TAGGED, Source.SHARED),
            None,
            120,
            Serve(TAGGED, Served.HIT, "shared"),
            Serve(TAGGED, Served.HIT, "coalesced"),
        ),
        (
            Stored(TAGGED, Source.REFRESHED),
            TAGGED,
            120,
            Serve(TAGGED, Served.REVALIDATED),
            Serve(TAGGED, Served.REVALIDATED, "coalesced"),
        ),
        (
            Pass(NoStore.SET_COOKIE, 200),
            PLAIN,
            120,
            Forward("uri-miss", "set-cookie"),
            Forward("uri-miss", "set-cookie"),
        ),
        (
            Pass(NoStore.STATUS, 502),
            PLAIN,
            120,
            Serve(PLAIN, Served.STALE, "upstream-502"),
            Serve(PLAIN, Served.STALE, "upstream-502"),
        ),
        (
            Pass(NoStore.STATUS, 502),
            PLAIN,
            140,
            Forward("uri-miss", "status"),
            Forward("uri-miss", "status"),
        ),
    ],
)
def test_what_a_fill_gives_its_leader_and_its_followers(
    result: FillResult,
    stale: StoredResponse | None,
    now: float,
    leader: Serve | Forward,
    follower: Serve | Forward,
) -> None:
    assert lead_result(result, stale, ROUTE, now) == leader
    assert follow_result(result, stale, ROUTE, now, req()) == follower


def test_a_follower_of_another_variant_forwards() -> None:
    base = LOOKUP.key
    english = replace(
        TAGGED,
        key=variant_of(base, ("accept-language",), req(Accept_Language="en")),
        base_key=base,
        vary=("accept-language",),
    )
    result = Stored(english)
    assert follow_result(result, None, ROUTE, 120, req(Accept_Language="fr")) == Forward(
        "vary-miss"
    )
    assert follow_result(result, None, ROUTE, 120, req(Accept_Language="en")) == Serve(
        english, detail="coalesced"
    )


@pytest.mark.parametrize(
    ("failure", "stale", "now", "expected"),
    [
        (Failure(504, "upstream timed out"), None, 120, Fail(504, "upstream timed out", None)),
        (
            Failure(504, "upstream timed out"),
            PLAIN,
            120,
            Serve(PLAIN, Served.STALE, "upstream-timed-out"),
        ),
        (
            Failure(502, "upstream unavailable"),
            PLAIN,
            140,
            Fail(502, "upstream unavailable", None),
        ),
        (Failure(503, "upstream busy", 1), None, 120, Fail(503, "upstream busy", 1)),
    ],
)
def test_on_failure(
    failure: Failure, stale: StoredResponse | None, now: float, expected: Serve | Fail
) -> None:
    assert on_failure(failure, stale, ROUTE, now) == expected


DATE1, DATE2 = "Tue, 24 Nov 2026 10:00:00 GMT", "Wed, 25 Nov 2026 10:00:00 GMT"


def stored(headers: Headers, origin_etag: str | None = ETAG) -> StoredResponse:
    return replace(TAGGED, headers=headers, origin_etag=origin_etag)


@pytest.mark.parametrize(
    ("entry_headers", "origin_etag", "not_modified", "expected"),
    [
        # Every field the 304 carries replaces the stored lines of that name.
        (
            (
                ("Content-Type", "image/jpeg"),
                ("Date", DATE1),
                ("ETag", ETAG),
                ("Via", "1.1 sidecache"),
            ),
            ETAG,
            (("Date", DATE2), ("Cache-Control", "max-age=60")),
            (
                ("Content-Type", "image/jpeg"),
                ("ETag", ETAG),
                ("Date", DATE2),
                ("Cache-Control", "max-age=60"),
            ),
        ),
        # Several stored lines of one name go; all of the 304's come.
        (
            (
                ("X-Tag", "a"),
                ("X-Tag", "b"),
                ("X-Keep", "k"),
                ("ETag", ETAG),
                ("Via", "1.1 sidecache"),
            ),
            ETAG,
            (("x-tag", "c"),),
            (("X-Keep", "k"), ("ETag", ETAG), ("x-tag", "c")),
        ),
        # What describes the stored bytes is not updated: framing, range, coding,
        # digest and validator; the stored Content-Type stays when not sent.
        (
            (
                ("Content-Type", "image/jpeg"),
                ("Content-Encoding", "gzip"),
                ("Content-MD5", "md5-a"),
                ("ETag", ETAG),
                ("Via", "1.1 sidecache"),
            ),
            ETAG,
            (
                ("Content-Length", "0"),
                ("Content-Range", "bytes */4"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Encoding", "br"),
                ("Content-MD5", "md5-b"),
                ("ETag", '"v2"'),
            ),
            (
                ("Content-Type", "image/jpeg"),
                ("Content-Encoding", "gzip"),
                ("Content-MD5", "md5-a"),
                ("ETag", ETAG),
            ),
        ),
        # The ETag sidecache computed, and its own Via element, are not the app's.
        (
            (("Last-Modified", LM), ("ETag", '"sc-computed"'), ("Via", "1.0 app, 1.1 sidecache")),
            None,
            (("Age", "3"),),
            (("Last-Modified", LM), ("Via", "1.0 app"), ("Age", "3")),
        ),
        # The 304's Via replaces the app's; build_entry appends this proxy again.
        (
            (("ETag", ETAG), ("Via", "1.0 app, 1.1 sidecache")),
            ETAG,
            (("Via", "1.1 edge"),),
            (("ETag", ETAG), ("Via", "1.1 edge")),
        ),
    ],
)
def test_refreshed_headers(
    entry_headers: Headers, origin_etag: str | None, not_modified: Headers, expected: Headers
) -> None:
    """RFC 9111 section 3.2: a 304 updates the stored header fields."""
    assert refreshed_headers(stored(entry_headers, origin_etag), not_modified) == expected


@pytest.mark.parametrize("now", [99.0, 100.0, 109.9, 110.0, 112.0, 115.0, 139.9, 140.0, 500.0])
@pytest.mark.parametrize(
    "stored",
    [PLAIN, TAGGED, replace(TAGGED, must_revalidate=True), replace(PLAIN, fresh_until=100.0)],
)
def test_on_lookup_serves_exactly_what_policy_calls_fresh(
    stored: StoredResponse, now: float
) -> None:
    """The hit path reads freshness itself (``now < fresh_until``): it must agree
    with ``policy.freshness`` everywhere."""
    served = isinstance(on_lookup(stored, LOOKUP, req(), now), Serve)
    assert served is (freshness(stored, ROUTE, now) is Freshness.FRESH)
