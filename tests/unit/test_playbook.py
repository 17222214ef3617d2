"""One key's life, scripted without a socket: the driver's part is played here
with values and a clock, and each step asserts what the flow decides and what
the client is answered (in the spirit of mitmproxy's Playbook tests).

    MISS -> fill -> HIT -> stale: revalidated with a 304 -> HIT
         -> stale-while-revalidate: served stale, refreshed by a 304 in the background
         -> stale: the app fails -> stale-if-error
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.answer import from_entry
from proxy.config import RouteConfig
from proxy.entry import Headers, StoredResponse
from proxy.flow import (
    Fail,
    Failure,
    Fetch,
    Head,
    Keep,
    Lead,
    Refresh,
    Revalidate,
    Serve,
    Served,
    Source,
    StaleWhileRevalidate,
    Stored,
    Stream,
    on_failure,
    on_head,
    on_lookup,
    on_response,
)
from proxy.policy import Lookup, build_entry, decide

ROUTE = RouteConfig(
    name="photo",
    match="/api/photo/{id}",
    ttl=60,
    stale_while_revalidate=30,
    stale_if_error=600,
)
BODY = b"\xff\xd8 a 2.5 MB photo, in spirit"
ETAG = '"photo-7-r1"'
LM = "Tue, 24 Nov 2026 10:00:00 GMT"
APP_200: Headers = (
    ("Content-Type", "image/jpeg"),
    ("ETag", ETAG),
    ("Last-Modified", LM),
    ("X-Revision", "1"),
)


def client(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"Host": "photos.example", **headers}))


def header(headers: Headers | list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name.lower()), None)


def fill(lookup: Lookup, status: int, headers: Headers, body: bytes, now: float) -> StoredResponse:
    """What fill.py does with a complete answer the flow said to keep."""
    assert (
        on_response(
            lookup,
            status,
            headers,
            content_length=len(body),
            max_object_bytes=1 << 24,
            revalidating=None,
        )
        == Keep()
    )
    return build_entry(lookup, status, headers, body, now=now, request_headers=client())


def refresh(
    lookup: Lookup, stale: StoredResponse, not_modified: Headers, now: float
) -> StoredResponse:
    """What fill.py does with a 304 to a revalidation: the stored body, updated headers."""
    decision = on_response(
        lookup, 304, not_modified, content_length=None, max_object_bytes=1 << 24, revalidating=stale
    )
    assert isinstance(decision, Refresh) and decision.entry is stale
    return build_entry(
        lookup, stale.status, decision.headers, stale.body, now=now, request_headers=client()
    )


def test_a_key_from_its_first_miss_to_stale_if_error() -> None:
    request = client()
    lookup = decide(
        ROUTE, "GET", "/api/photo/7", "", request, host="photos.example", has_body=False
    )
    assert isinstance(lookup, Lookup)

    # t=0: nothing stored. A fill, streamed to this client as it arrives.
    t = 0.0
    miss = on_lookup(None, lookup, request, t)
    assert miss == Fetch(None, (), Lead.STREAM)
    head = Head(200, "OK", APP_200, len(BODY), True, 0.05)
    assert on_head(head, miss.stale, ROUTE, t) == Stream(head, "uri-miss")
    entry = fill(lookup, 200, APP_200, BODY, t)
    assert (entry.origin_etag, entry.last_modified) == (ETAG, LM)

    # t=10: fresh. Served from the entry, nothing sent upstream.
    t = 10.0
    hit = on_lookup(entry, lookup, request, t)
    assert hit == Serve(entry)
    answer = from_entry(hit, ROUTE, request, t)
    assert (answer.status, answer.body) == (200, BODY)
    assert header(answer.headers, "Cache-Status") == "sidecache; hit; ttl=50"
    # A browser that has it already: 304 from the entry.
    conditional = client(**{"If-None-Match": ETAG})
    assert from_entry(on_lookup(entry, lookup, conditional, t), ROUTE, conditional, t).status == 304

    # t=100: past ttl and stale-while-revalidate. Revalidated with the app's own
    # validators; the app answers 304 with a new revision of the metadata.
    t = 100.0
    step = on_lookup(entry, lookup, request, t)
    assert step == Revalidate(
        entry, (("If-None-Match", ETAG), ("If-Modified-Since", LM)), Lead.STREAM
    )
    entry = refresh(
        lookup, entry, (("X-Revision", "2"), ("Date", "Tue, 24 Nov 2026 10:01:40 GMT")), t
    )
    first = Stored(entry, Source.REFRESHED, 0.01)
    served = on_head(first, step.stale, ROUTE, t)
    assert served == Serve(entry, Served.REVALIDATED)
    answer = from_entry(served, ROUTE, request, t)
    assert answer.body is BODY  # the stored body: not transferred again
    assert header(answer.headers, "X-Cache") == "HIT"
    assert header(answer.headers, "Cache-Status") == "sidecache; fwd=stale; fwd-status=304; ttl=60"
    assert header(answer.headers, "X-Revision") == "2"
    assert header(answer.headers, "ETag") == ETAG

    # t=130: fresh again, for another ttl from the 304.
    t = 130.0
    assert on_lookup(entry, lookup, request, t) == Serve(entry)

    # t=170: within stale-while-revalidate. Served stale at once; a background
    # fill revalidates, and its 304 refreshes the entry for the next client.
    t = 170.0
    step = on_lookup(entry, lookup, request, t)
    assert step == StaleWhileRevalidate(entry, (("If-None-Match", ETAG), ("If-Modified-Since", LM)))
    stale = from_entry(Serve(entry, Served.STALE, "revalidating"), ROUTE, request, t)
    assert header(stale.headers, "X-Cache") == "STALE"
    assert header(stale.headers, "Cache-Status") == (
        "sidecache; hit; fwd=stale; ttl=-10; detail=revalidating"
    )
    entry = refresh(lookup, entry, (("X-Revision", "3"),), t)
    t = 171.0
    assert on_lookup(entry, lookup, request, t) == Serve(entry)
    assert header(from_entry(Serve(entry), ROUTE, request, t).headers, "X-Revision") == "3"

    # t=400: stale again, and the app is failing: first it answers 503, then it
    # cannot be reached. The stored copy stands in (stale-if-error).
    t = 400.0
    step = on_lookup(entry, lookup, request, t)
    assert isinstance(step, Revalidate)
    broken = Head(503, "Service Unavailable", (), 0, False, 0.01)
    assert on_head(broken, step.stale, ROUTE, t) == Serve(entry, Served.STALE, "upstream-503")
    failure = Failure(502, "upstream unavailable")
    stand_in = on_failure(failure, step.stale, ROUTE, t)
    assert stand_in == Serve(entry, Served.STALE, "upstream-unavailable")
    assert header(from_entry(stand_in, ROUTE, request, t).headers, "X-Cache") == "STALE"

    # t=900: past stale-if-error too (the last refresh was at 171, fresh until
    # 231, usable on errors until 831): the app's failure is the client's.
    t = 900.0
    assert on_failure(failure, entry, ROUTE, t) == Fail(502, "upstream unavailable", None)
