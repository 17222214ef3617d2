"""Cache decisions (proxy/policy.py): lookup or bypass, store or not, freshness."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.entry import Headers
from proxy.keys import credential_digest
from proxy.policy import (
    Bypass,
    BypassReason,
    Freshness,
    Lookup,
    NoStore,
    age,
    build_entry,
    content_type_allowed,
    decide,
    freshness,
    store_refusal,
    usable_on_error,
    variant_of,
    vary_on_coding,
)


@dataclass(frozen=True)
class Route:
    """The attributes of config.RouteConfig the policy reads."""

    name: str = "photo"
    match: str = "/api/photo/{id}"
    methods: tuple[str, ...] = ("GET", "HEAD")
    ttl: float = 300.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    statuses: tuple[int, ...] = (200,)
    query: Any = "all"
    vary: tuple[str, ...] = ()
    credentials: str = "bypass"
    client_cache_control: str | None = None
    content_types: tuple[str, ...] | None = None


PHOTO = Route()


def run(
    route: Route | None = PHOTO,
    method: str = "GET",
    path: str | None = "/api/photo/1",
    query: str = "",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    has_body: bool = False,
    raw_path: str | None = None,
) -> Lookup | Bypass:
    return decide(
        route,  # type: ignore[arg-type]
        method,
        path,
        query,
        CIMultiDict(headers or []),
        host="app:8000",
        has_body=has_body,
        raw_path=raw_path,
    )


@pytest.mark.parametrize(
    ("kwargs", "reason", "invalidate"),
    [
        ({"path": None}, BypassReason.AMBIGUOUS, None),
        ({"route": None}, BypassReason.NO_ROUTE, None),
        ({"route": None, "method": "POST"}, BypassReason.NO_ROUTE, {"/api/photo/1"}),
        ({"method": "POST"}, BypassReason.METHOD, {"/api/photo/1"}),
        ({"method": "DELETE"}, BypassReason.METHOD, {"/api/photo/1"}),
        # An ambiguous path is still invalidated, under every reading of it.
        (
            {"method": "DELETE", "path": None, "raw_path": "/api/photo/./1;v=2"},
            BypassReason.AMBIGUOUS,
            {"/api/photo/1", "/api/photo/1/"},
        ),
        (
            {"method": "PUT", "raw_path": "/api/photo/%31"},
            BypassReason.METHOD,
            {"/api/photo/1", "/api/photo/1/"},
        ),
        ({"method": "OPTIONS"}, BypassReason.METHOD, None),
        ({"has_body": True}, BypassReason.REQUEST_BODY, None),
        ({"headers": {"Authorization": "Bearer a"}}, BypassReason.CREDENTIALS, None),
        ({"headers": {"Cookie": "s=1"}}, BypassReason.CREDENTIALS, None),
        ({"query": "a=#"}, BypassReason.AMBIGUOUS, None),
    ],
)
def test_bypass_decisions(
    kwargs: dict[str, Any], reason: BypassReason, invalidate: set[str] | None
) -> None:
    decision = run(**kwargs)
    assert isinstance(decision, Bypass)
    assert decision.reason is reason
    assert decision.invalidate == invalidate


def test_lookup_carries_key_target_and_head() -> None:
    get = run(query="a=1")
    head = run(method="HEAD", query="a=1")
    assert isinstance(get, Lookup) and isinstance(head, Lookup)
    assert get.key == head.key  # HEAD is answered from the GET entry
    assert get.target == "/api/photo/1?a=1" and get.path == "/api/photo/1"
    assert not get.head and head.head
    assert "app:8000" in get.key


def test_a_range_request_is_a_lookup_marked_partial() -> None:
    whole = run()
    part = run(headers={"Range": "bytes=0-9"})
    assert isinstance(whole, Lookup) and isinstance(part, Lookup)
    assert part.partial and not whole.partial
    assert part.key == whole.key  # served from the whole entry


def test_route_methods_limit_lookups() -> None:
    decision = run(route=replace(PHOTO, methods=("GET",)), method="HEAD")
    assert isinstance(decision, Bypass) and decision.reason is BypassReason.METHOD


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer a"}, {"Cookie": "s=1"}])
def test_shared_and_per_user_credentials(headers: dict[str, str]) -> None:
    shared = run(route=replace(PHOTO, credentials="shared"), headers=headers)
    anonymous = run(route=replace(PHOTO, credentials="shared"))
    per_user = run(route=replace(PHOTO, credentials="per-user"), headers=headers)
    assert isinstance(shared, Lookup) and isinstance(anonymous, Lookup)
    assert isinstance(per_user, Lookup)
    assert shared.key == anonymous.key
    digest = credential_digest(
        [headers["Authorization"]] if "Authorization" in headers else [],
        [headers["Cookie"]] if "Cookie" in headers else [],
    )
    assert per_user.key.endswith(digest)
    assert per_user.key != shared.key


def test_vary_headers_join_the_key() -> None:
    route = replace(PHOTO, vary=("accept",))
    keys = {
        run(route=route, headers=h).key  # type: ignore[union-attr]
        for h in ({}, {"Accept": "image/webp"}, {"Accept": "image/avif"})
    }
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("status", "headers", "length", "route", "expected"),
    [
        (200, (), 10, PHOTO, None),
        (200, (), None, PHOTO, None),
        (404, (), 10, PHOTO, NoStore.STATUS),
        (404, (), 10, replace(PHOTO, statuses=(200, 404)), None),
        (200, (("Set-Cookie", "a=b"),), 10, PHOTO, NoStore.SET_COOKIE),
        (200, (("Cache-Control", "public, no-store"),), 10, PHOTO, NoStore.NO_STORE),
        (200, (("Cache-Control", "private"),), 10, PHOTO, NoStore.PRIVATE),
        (200, (("Cache-Control", "no-cache"),), 10, PHOTO, NoStore.NO_CACHE),
        (200, (("Cache-Control", "public, max-age=60"),), 10, PHOTO, None),
        (200, (("Vary", "*"),), 10, PHOTO, NoStore.VARY),
        (200, (("Vary", "Accept"),), 10, PHOTO, None),  # stored as a variant
        (200, (("Vary", "X-Forwarded-Host"),), 10, PHOTO, NoStore.VARY),  # the proxy's value
        (200, (("Vary", "accept, Host"),), 10, PHOTO, NoStore.VARY),
        (200, (("Vary", "Accept"),), 10, replace(PHOTO, vary=("accept",)), None),
        (200, (("Vary", "*"),), 10, replace(PHOTO, vary=("accept",)), NoStore.VARY),
        (200, (), 1001, PHOTO, NoStore.TOO_LARGE),
        (200, (), 1000, PHOTO, None),
        (
            200,
            (("Content-Type", "text/html"),),
            10,
            replace(PHOTO, content_types=("image/*",)),
            NoStore.CONTENT_TYPE,
        ),
        (200, (), 10, replace(PHOTO, content_types=("image/*",)), NoStore.CONTENT_TYPE),
        (
            200,
            (("Content-Type", "image/jpeg"),),
            10,
            replace(PHOTO, content_types=("image/*",)),
            None,
        ),
    ],
)
def test_store_refusal(
    status: int, headers: Headers, length: int | None, route: Route, expected: NoStore | None
) -> None:
    got = store_refusal(
        route,  # type: ignore[arg-type]
        status,
        headers,
        content_length=length,
        max_object_bytes=1000,
    )
    assert got is expected


@pytest.mark.parametrize(
    ("content_type", "allowed", "ok"),
    [
        ("image/jpeg", ("image/*",), True),
        ("IMAGE/JPEG; charset=x", ("image/jpeg",), True),
        ("image/png", ("image/jpeg",), False),
        ("text/html", ("image/*", "text/html"), True),
        (None, ("image/*",), False),
    ],
)
def test_content_type_allowed(content_type: str | None, allowed: tuple[str, ...], ok: bool) -> None:
    assert content_type_allowed(content_type, allowed) is ok


def entry_for(route: Route, headers: Headers = (), now: float = 1000.0) -> Any:
    lookup = run(route=route)
    assert isinstance(lookup, Lookup)
    return build_entry(lookup, 200, headers, b"body", now=now)


def test_build_entry_times_validators_and_size() -> None:
    route = replace(PHOTO, ttl=60, stale_while_revalidate=10, stale_if_error=100)
    e = entry_for(route, (("Age", "5"), ("Content-Type", "image/jpeg")))
    assert (e.stored_at, e.fresh_until, e.stale_until) == (1000.0, 1060.0, 1160.0)
    assert e.initial_age == 5.0 and e.etag.startswith('"sc-')
    assert e.headers == (
        ("Content-Type", "image/jpeg"),
        ("ETag", e.etag),
        ("Via", "1.1 sidecache"),
    )  # stored as served: Age is recomputed on every hit
    assert e.size > len(b"body") + sum(len(n) + len(v) for n, v in e.headers)
    kept = entry_for(route, (("ETag", '"v1"'), ("Via", "1.0 app")))
    assert kept.etag == '"v1"'
    assert kept.headers == (("ETag", '"v1"'), ("Via", "1.0 app, 1.1 sidecache"))


@pytest.mark.parametrize(
    ("now", "state", "on_error"),
    [
        (1000.0, Freshness.FRESH, True),
        (1059.9, Freshness.FRESH, True),
        (1060.0, Freshness.STALE_WHILE_REVALIDATE, True),
        (1069.9, Freshness.STALE_WHILE_REVALIDATE, True),
        (1070.0, Freshness.STALE_IF_ERROR, True),
        (1159.9, Freshness.STALE_IF_ERROR, True),
        (1160.0, Freshness.EXPIRED, False),
    ],
)
def test_freshness(now: float, state: Freshness, on_error: bool) -> None:
    route = replace(PHOTO, ttl=60, stale_while_revalidate=10, stale_if_error=100)
    e = entry_for(route)
    assert freshness(e, route, now) is state  # type: ignore[arg-type]
    assert usable_on_error(e, route, now) is on_error  # type: ignore[arg-type]


def test_age_adds_the_upstream_age() -> None:
    e = entry_for(PHOTO, (("Age", "7"),))
    assert age(e, 1000.0) == 7
    assert age(e, 1030.5) == 37
    assert age(e, 900.0) == 7  # a clock that went backwards never yields a negative age


@pytest.mark.parametrize(
    ("headers", "vary"),
    [
        ((("Content-Encoding", "gzip"),), ("accept-encoding",)),
        (
            (("Content-Encoding", "br"), ("Vary", "Accept-Language")),
            ("accept-encoding", "accept-language"),
        ),
        ((("Content-Encoding", "identity"),), ()),
        ((), ()),
    ],
)
def test_an_encoded_answer_is_a_variant_on_accept_encoding(
    headers: Headers, vary: tuple[str, ...]
) -> None:
    lookup = run()
    assert isinstance(lookup, Lookup)
    request = CIMultiDict({"Accept-Encoding": "gzip"})
    entry = build_entry(lookup, 200, headers, b"body", now=1.0, request_headers=request)
    assert entry.vary == vary
    if vary:
        same = CIMultiDict({"Accept-Encoding": "x-gzip;q=1, deflate"})
        assert variant_of(lookup.key, vary, same) == entry.key
        assert variant_of(lookup.key, vary, CIMultiDict()) != entry.key


PER_USER = replace(PHOTO, credentials="per-user")


def key_of(route: Route, headers: list[tuple[str, str]]) -> str:
    decision = run(route=route, headers=headers)
    assert isinstance(decision, Lookup), decision
    return decision.key


@pytest.mark.parametrize(
    ("attack", "innocent"),
    [
        ([("Cookie", "consent=yes"), ("Cookie", "session=x")], [("Cookie", "consent=yes")]),
        ([("Cookie", "session=x"), ("Cookie", "consent=yes")], [("Cookie", "consent=yes")]),
        ([("Cookie", "consent=yes"), ("Cookie", "")], [("Cookie", "consent=yes")]),
        (
            [("Cookie", "consent=yes"), ("Cookie", "session=x")],
            [("Cookie", "session=x"), ("Cookie", "consent=yes")],
        ),
        (
            [("Authorization", "Bearer a"), ("Authorization", "Bearer x")],
            [("Authorization", "Bearer a")],
        ),
        (
            [("Authorization", "Bearer a"), ("Cookie", "s=1"), ("Cookie", "s=2")],
            [("Authorization", "Bearer a"), ("Cookie", "s=1")],
        ),
    ],
)
def test_every_credential_line_joins_a_per_user_key(
    attack: list[tuple[str, str]], innocent: list[tuple[str, str]]
) -> None:
    assert key_of(PER_USER, attack) != key_of(PER_USER, innocent)
    assert key_of(PER_USER, attack) == key_of(PER_USER, list(attack))


@pytest.mark.parametrize(
    ("route", "headers", "bypass"),
    [
        (replace(PHOTO, vary=("accept-language",)), [("Connection", "accept-language")], True),
        (
            replace(PHOTO, vary=("accept-language",)),
            [("Connection", "close, Accept-Language")],
            True,
        ),
        (
            replace(PHOTO, vary=("accept-language",)),
            [("Connection", "keep-alive"), ("Connection", "accept-language")],
            True,
        ),
        (
            replace(PHOTO, vary=("x-forwarded-prefix",)),
            [("Connection", "x-forwarded-prefix")],
            True,
        ),
        (replace(PHOTO, vary=("accept-language",)), [("Connection", "keep-alive")], False),
        (replace(PHOTO, vary=("accept-language",)), [("Connection", "x-other")], False),
        (PER_USER, [("Cookie", "s=1"), ("Connection", "cookie")], True),
        (PER_USER, [("Authorization", "Bearer a"), ("Connection", "authorization")], True),
        (PER_USER, [("Cookie", "s=1"), ("Connection", "keep-alive")], False),
        # Nothing keyed is lost: an anonymous request, a shared route, an unkeyed name.
        (PER_USER, [("Connection", "cookie")], False),
        (
            replace(PHOTO, credentials="shared"),
            [("Cookie", "s=1"), ("Connection", "cookie")],
            False,
        ),
        (PHOTO, [("Connection", "accept-language")], False),
    ],
)
def test_a_connection_option_that_drops_a_keyed_header_bypasses(
    route: Route, headers: list[tuple[str, str]], bypass: bool
) -> None:
    decision = run(route=route, headers=headers)
    if bypass:
        assert isinstance(decision, Bypass) and decision.reason is BypassReason.CONNECTION
        assert decision.invalidate is None
    else:
        assert isinstance(decision, Lookup)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            (("Content-Encoding", "gzip"),),
            (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")),
        ),
        (
            (("Vary", "Accept-Language"), ("Content-Encoding", "br")),
            (("Vary", "Accept-Language, Accept-Encoding"), ("Content-Encoding", "br")),
        ),
        (
            (("Vary", "Origin"), ("Vary", "Accept"), ("Content-Encoding", "gzip")),
            (("Vary", "Origin, Accept-Encoding"), ("Vary", "Accept"), ("Content-Encoding", "gzip")),
        ),
        (
            (("Vary", ""), ("Content-Encoding", "gzip")),
            (("Vary", "Accept-Encoding"), ("Content-Encoding", "gzip")),
        ),
        # Already said, or nothing to say.
        ((("Content-Encoding", "gzip"), ("Vary", "accept-encoding")), None),
        ((("Content-Encoding", "gzip"), ("Vary", "Origin, Accept-Encoding")), None),
        ((("Content-Encoding", "gzip"), ("Vary", "*")), None),
        ((("Content-Encoding", "identity"),), None),
        ((("Content-Type", "image/jpeg"),), None),
    ],
)
def test_an_implicit_coding_variant_is_declared_in_vary(
    headers: Headers, expected: Headers | None
) -> None:
    assert vary_on_coding(headers) == (headers if expected is None else expected)


def test_a_stored_encoded_answer_says_vary_accept_encoding() -> None:
    lookup = run()
    assert isinstance(lookup, Lookup)
    request = CIMultiDict({"Accept-Encoding": "gzip"})
    entry = build_entry(
        lookup, 200, (("Content-Encoding", "gzip"),), b"body", now=1.0, request_headers=request
    )
    assert ("Vary", "Accept-Encoding") in entry.headers
    plain = build_entry(lookup, 200, (), b"body", now=1.0)
    assert not any(n.lower() == "vary" for n, _ in plain.headers)


@pytest.mark.parametrize(
    ("stored_for", "asks", "same"),
    [
        ({}, {"Accept-Encoding": "identity"}, False),  # absent means any coding
        ({}, {"Accept-Encoding": "gzip;q=0"}, False),
        ({}, {"Accept-Encoding": ""}, False),
        ({"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0, deflate"}, True),
        ({"Accept-Encoding": "gzip"}, {"Accept-Encoding": "gzip;q=0;x=1"}, False),
    ],
)
def test_a_client_refusing_every_coding_is_its_own_variant(
    stored_for: dict[str, str], asks: dict[str, str], same: bool
) -> None:
    lookup = run()
    assert isinstance(lookup, Lookup)
    entry = build_entry(
        lookup,
        200,
        (("Content-Encoding", "gzip"),),
        b"body",
        now=1.0,
        request_headers=CIMultiDict(stored_for),
    )
    assert (variant_of(lookup.key, entry.vary, CIMultiDict(asks)) == entry.key) is same
