"""Cache decisions (proxy/policy.py): lookup or bypass, store or not, freshness."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.entry import Headers
from proxy.keys import credential_digest
from proxy.policy import (
    REVALIDATION_KEEP,
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
    retimed,
    stale_windows,
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
    # The tests of this module are of today's ``route`` behaviour unless they say
    # otherwise; ``origin`` routes are tested in test_freshness.py.
    freshness: str = "route"
    ttl: float | None = 300.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    statuses: tuple[int, ...] | None = (200,)
    query: Any = "all"
    vary: tuple[str, ...] = ()
    credentials: str | None = "bypass"
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
        # A WebSocket handshake is tunnelled, never looked up, on any path.
        (
            {"headers": {"Connection": "keep-alive, Upgrade", "Upgrade": "websocket"}},
            BypassReason.UPGRADE,
            None,
        ),
        (
            {"route": None, "headers": {"Connection": "upgrade", "Upgrade": "WebSocket"}},
            BypassReason.UPGRADE,
            None,
        ),
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


# -- origin freshness (``freshness: origin``) ---------------------------------------

ORIGIN = replace(PHOTO, freshness="origin", ttl=None, statuses=None, credentials=None)
DATE = (("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),)
ETAG = (("ETag", '"v1"'),)


@pytest.mark.parametrize(
    ("route", "headers", "expected"),
    [
        # Unset on an origin route: Authorization per RFC 9111 section 3.5 (looked up,
        # shared key), Cookie bypasses.
        (ORIGIN, [("Authorization", "Bearer a")], "authorized"),
        (ORIGIN, [("Cookie", "s=1")], BypassReason.CREDENTIALS),
        (ORIGIN, [("Authorization", "Bearer a"), ("Cookie", "s=1")], BypassReason.CREDENTIALS),
        # Set explicitly, credentials wins.
        (replace(ORIGIN, credentials="bypass"), [("Authorization", "a")], BypassReason.CREDENTIALS),
        (replace(ORIGIN, credentials="shared"), [("Authorization", "a")], "shared"),
        (replace(ORIGIN, credentials="per-user"), [("Authorization", "a")], "per-user"),
        # Unset on a route route: bypass, as always.
        (replace(PHOTO, credentials=None), [("Authorization", "a")], BypassReason.CREDENTIALS),
    ],
)
def test_credentials_on_origin_routes(
    route: Route, headers: list[tuple[str, str]], expected: BypassReason | str
) -> None:
    decision = run(route=route, headers=headers)
    anonymous = run(route=route)
    assert isinstance(anonymous, Lookup)
    if isinstance(expected, BypassReason):
        assert isinstance(decision, Bypass) and decision.reason is expected
        return
    assert isinstance(decision, Lookup)
    assert decision.authorized is (expected == "authorized")
    assert (decision.key == anonymous.key) is (expected != "per-user")


def refusal(
    route: Route, status: int, headers: Headers, *, authorized: bool = False
) -> NoStore | None:
    return store_refusal(
        route,  # type: ignore[arg-type]
        status,
        headers,
        content_length=10,
        max_object_bytes=1000,
        authorized=authorized,
    )


@pytest.mark.parametrize(
    ("route", "status", "headers", "expected"),
    [
        # Nothing tells how long to reuse it: refused, unless a validator lets it
        # be revalidated, a heuristic or the route's default gives a lifetime, or a
        # stale window allows serving it stale.
        (ORIGIN, 200, (), NoStore.NO_FRESHNESS),
        (replace(ORIGIN, ttl=60), 200, (), None),
        (ORIGIN, 200, ETAG, None),
        (ORIGIN, 200, (("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),), None),
        (ORIGIN, 200, (("Cache-Control", "max-age=60"),), None),
        (ORIGIN, 200, (("Cache-Control", "max-age=0"),), NoStore.NO_FRESHNESS),
        (replace(ORIGIN, ttl=60), 200, (("Cache-Control", "max-age=0"),), NoStore.NO_FRESHNESS),
        (ORIGIN, 200, (("Cache-Control", "max-age=0"), *ETAG), None),
        (replace(ORIGIN, stale_if_error=30), 200, (("Cache-Control", "max-age=0"),), None),
        (ORIGIN, 200, (("Cache-Control", "max-age=0, stale-while-revalidate=30"),), None),
        (
            replace(ORIGIN, stale_while_revalidate=30),
            200,
            (("Cache-Control", "max-age=0, must-revalidate"),),
            NoStore.NO_FRESHNESS,
        ),
        (
            replace(ORIGIN, ttl=60),
            200,
            (*DATE, ("Expires", "Sun, 06 Nov 1994 08:00:00 GMT")),
            NoStore.NO_FRESHNESS,
        ),
        (replace(ORIGIN, ttl=60), 200, (*DATE, ("Expires", "0")), NoStore.NO_FRESHNESS),
        (ORIGIN, 200, (*DATE, ("Expires", "Sun, 06 Nov 1994 09:00:00 GMT")), None),
        # no-cache: stored to be revalidated, so only with a validator.
        (replace(ORIGIN, ttl=60), 200, (("Cache-Control", "no-cache"),), NoStore.NO_CACHE),
        (ORIGIN, 200, (("Cache-Control", 'no-cache="Set-Cookie"'), *ETAG), None),
        (ORIGIN, 200, (("Cache-Control", "no-cache"), ("Last-Modified", "x")), None),
        # private, no-store, Set-Cookie: never.
        (ORIGIN, 200, (("Cache-Control", "private, max-age=60"),), NoStore.PRIVATE),
        (ORIGIN, 200, (("Cache-Control", "max-age=60, no-store"),), NoStore.NO_STORE),
        (ORIGIN, 200, (("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")), NoStore.SET_COOKIE),
        # CDN-Cache-Control replaces Cache-Control (RFC 9213).
        (
            ORIGIN,
            200,
            (("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")),
            None,
        ),
        (
            ORIGIN,
            200,
            (("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "private")),
            NoStore.PRIVATE,
        ),
        # Statuses: any with explicit freshness; the heuristically cacheable ones
        # (or public) with the default; ``statuses`` restricts.
        (replace(ORIGIN, ttl=60), 404, (), None),
        (replace(ORIGIN, ttl=60), 403, (), NoStore.STATUS),
        (replace(ORIGIN, ttl=60), 403, (("Cache-Control", "public"),), None),
        (ORIGIN, 500, (("Cache-Control", "max-age=60"),), None),
        (ORIGIN, 302, (("Cache-Control", "s-maxage=60"),), None),
        (replace(ORIGIN, ttl=60, statuses=(200,)), 404, (), NoStore.STATUS),
        (replace(ORIGIN, statuses=(200,)), 500, (("Cache-Control", "max-age=60"),), NoStore.STATUS),
        (replace(ORIGIN, ttl=60, statuses=(200, 302)), 302, (), None),
        (ORIGIN, 206, (("Cache-Control", "max-age=60"),), NoStore.STATUS),
        (ORIGIN, 304, (("Cache-Control", "max-age=60"),), NoStore.STATUS),
    ],
)
def test_store_refusal_on_origin_routes(
    route: Route, status: int, headers: Headers, expected: NoStore | None
) -> None:
    assert refusal(route, status, headers) is expected


MU = "max-age=3600, must-understand"


# RFC 9111 section 5.2.2.3. Statuses a ``statuses`` list would refuse stay refused.
@pytest.mark.parametrize(
    ("route", "status", "cache_control", "expected"),
    [
        (ORIGIN, 599, MU, NoStore.MUST_UNDERSTAND),
        (ORIGIN, 499, MU, NoStore.MUST_UNDERSTAND),
        (ORIGIN, 429, MU, NoStore.MUST_UNDERSTAND),
        (ORIGIN, 599, "max-age=3600", None),  # without it, any status may be stored
        (ORIGIN, 200, MU, None),
        (ORIGIN, 404, MU, None),
        (ORIGIN, 500, MU, None),
        # With a status it understands, sidecache ignores no-store.
        (ORIGIN, 200, "no-store, must-understand, max-age=60", None),
        (ORIGIN, 410, "must-understand, no-store, max-age=60", None),
        (ORIGIN, 599, "no-store, must-understand, max-age=60", NoStore.MUST_UNDERSTAND),
        (ORIGIN, 200, "no-store, max-age=60", NoStore.NO_STORE),
        # Not private, though, nor without a lifetime.
        (ORIGIN, 200, "private, must-understand, max-age=60", NoStore.PRIVATE),
        (ORIGIN, 200, "no-store, must-understand", NoStore.NO_FRESHNESS),
        (replace(ORIGIN, statuses=(200,)), 500, MU, NoStore.STATUS),
        (ORIGIN, 206, MU, NoStore.STATUS),
        # A route route reads no-store as always, and the route decides the status.
        (PHOTO, 200, "no-store, must-understand, max-age=60", NoStore.NO_STORE),
        (replace(PHOTO, statuses=(599,)), 599, MU, None),
    ],
)
def test_must_understand(
    route: Route, status: int, cache_control: str, expected: NoStore | None
) -> None:
    assert refusal(route, status, (("Cache-Control", cache_control),)) is expected


@pytest.mark.parametrize(
    ("route", "headers", "expected"),
    [
        # The conformance suite's surrogate-* responses.
        (ORIGIN, (("Surrogate-Control", "max-age=3600"),), None),
        (
            ORIGIN,
            (
                ("Surrogate-Control", "max-age=0"),
                *DATE,
                ("Expires", "Sun, 06 Nov 1994 11:35:17 GMT"),
            ),
            NoStore.NO_FRESHNESS,
        ),
        (
            ORIGIN,
            (("Cache-Control", "max-age=10000"), ("Surrogate-Control", "no-store")),
            NoStore.NO_STORE,
        ),
        (
            ORIGIN,
            (("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=10000;sidecache")),
            None,
        ),
        (
            ORIGIN,
            (("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=10000;other")),
            NoStore.NO_STORE,
        ),
        (ORIGIN, (("Surrogate-Control", "max-age=3600;other"),), NoStore.NO_FRESHNESS),
        # Set-Cookie is never stored, whatever Surrogate-Control says.
        (
            ORIGIN,
            (("Surrogate-Control", "max-age=60"), ("Set-Cookie", "a=b")),
            NoStore.SET_COOKIE,
        ),
        # A route route does not read it: Cache-Control's no-store, and the ttl.
        (
            PHOTO,
            (("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=10000")),
            NoStore.NO_STORE,
        ),
    ],
)
def test_surrogate_control_on_store(
    route: Route, headers: Headers, expected: NoStore | None
) -> None:
    assert refusal(route, 200, headers) is expected


@pytest.mark.parametrize(
    ("route", "fresh_until"),
    [(ORIGIN, 1000.0 + 3600), (replace(ORIGIN, ttl=60), 1000.0 + 3600), (PHOTO, 1300.0)],
)
def test_a_surrogate_lifetime_is_the_entry_lifetime_on_origin_routes_only(
    route: Route, fresh_until: float
) -> None:
    headers = (
        ("Cache-Control", "max-age=1, no-cache"),
        ("Surrogate-Control", "max-age=3600"),
        ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Expires", "Sun, 06 Nov 1994 08:49:38 GMT"),
    )
    e = origin_entry(route, headers)
    assert (e.fresh_until, e.must_revalidate) == (fresh_until, False)


def test_a_surrogate_lifetime_is_still_refused_to_a_request_with_authorization() -> None:
    """Surrogate-Control says nothing about sharing (RFC 9111 section 3.5)."""
    headers = (("Cache-Control", "public"), ("Surrogate-Control", "max-age=60"))
    assert refusal(ORIGIN, 200, headers, authorized=True) is NoStore.AUTHORIZATION
    assert refusal(ORIGIN, 200, headers) is None


def test_an_invalid_date_counts_as_absent() -> None:
    """RFC 9110 section 6.6.1: Expires then counts from when the response arrived
    (``wall``), which a caller must pass for it to be of use."""
    wall = 784111777.0  # DATE's instant
    headers = (("Date", "foo"), ("Expires", "Sun, 06 Nov 1994 08:49:47 GMT"))  # wall + 10 s
    kwargs: dict[str, Any] = {"content_length": 10, "max_object_bytes": 1000}
    assert store_refusal(ORIGIN, 200, headers, wall=wall, **kwargs) is None  # type: ignore[arg-type]
    e = origin_entry(ORIGIN, headers, wall=wall)
    assert (e.fresh_until, e.initial_age) == (1010.0, 0.0)
    late = origin_entry(ORIGIN, headers, wall=wall + 4)
    assert late.fresh_until == 1006.0
    # Without the arrival time there is nothing to count Expires from.
    assert refusal(ORIGIN, 200, headers) is NoStore.NO_FRESHNESS


@pytest.mark.parametrize(
    ("headers", "fresh_until", "initial_age"),
    [
        ((("Cache-Control", "max-age=3600"), ("Age", "abc")), 1000.0, 0.0),
        ((("Cache-Control", "max-age=3600"), ("Age", "0"), ("Age", "0")), 1000.0, 0.0),
        ((("Cache-Control", "max-age=3600"), ("Age", "60")), 4540.0, 60.0),
        ((("Age", "abc"),), 1300.0, 0.0),  # the route default ignores ages
    ],
)
def test_an_invalid_age_stores_an_entry_stale(
    headers: Headers, fresh_until: float, initial_age: float
) -> None:
    e = origin_entry(replace(ORIGIN, ttl=300), (*headers, *ETAG))
    assert (e.fresh_until, e.initial_age) == (fresh_until, initial_age)
    # Without a validator or a default, nothing would let it be reused.
    if fresh_until == 1000.0:
        assert refusal(ORIGIN, 200, headers) is NoStore.NO_FRESHNESS
        assert refusal(ORIGIN, 200, (*headers, *ETAG)) is None


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        ("max-age=60", NoStore.AUTHORIZATION),
        ("max-age=60, proxy-revalidate", NoStore.AUTHORIZATION),
        ("max-age=60, public", None),
        ("s-maxage=60", None),
        ("max-age=60, must-revalidate", None),
        ("public, private", NoStore.PRIVATE),
    ],
)
def test_a_response_to_a_request_with_authorization_must_say_it_may_be_shared(
    cache_control: str, expected: NoStore | None
) -> None:
    headers = (("Cache-Control", cache_control),)
    assert refusal(ORIGIN, 200, headers, authorized=True) is expected
    assert refusal(ORIGIN, 200, headers, authorized=False) is (
        NoStore.PRIVATE if "private" in cache_control else None
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # No-cache and private are refused on a route route, whatever else is said;
        # the app's lifetimes are not read at all.
        ((("Cache-Control", "no-cache"), *ETAG), NoStore.NO_CACHE),
        ((("Cache-Control", "max-age=0"),), None),
        ((*DATE, ("Expires", "0")), None),
        ((("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")), NoStore.NO_STORE),
        ((("CDN-Cache-Control", "private"),), None),
        ((("Surrogate-Control", "no-store"),), None),
    ],
)
def test_route_routes_read_only_what_they_always_read(
    headers: Headers, expected: NoStore | None
) -> None:
    assert refusal(PHOTO, 200, headers) is expected
    assert refusal(PHOTO, 404, (("Cache-Control", "max-age=60"),)) is NoStore.STATUS


def origin_entry(
    route: Route,
    headers: Headers,
    now: float = 1000.0,
    **kwargs: Any,
) -> Any:
    lookup = run(route=route)
    assert isinstance(lookup, Lookup)
    return build_entry(lookup, 200, headers, b"body", now=now, **kwargs)


WINDOWS = replace(ORIGIN, ttl=300, stale_while_revalidate=10, stale_if_error=100)


@pytest.mark.parametrize(
    ("headers", "times", "flags"),
    [
        # (fresh_until, stale_until, initial_age), (must_revalidate, origin_lifetime)
        ((("Cache-Control", "max-age=60"), ("Age", "10")), (1050, 1150, 10), (False, True)),
        ((), (1300, 1400, 0), (False, False)),  # the route's default
        ((("Age", "400"),), (1300, 1400, 400), (False, False)),
        (
            (("Cache-Control", "max-age=60, stale-while-revalidate=500, stale-if-error=50"),),
            (1060, 1560, 0),
            (False, True),
        ),
        ((("Cache-Control", "max-age=60, must-revalidate"),), (1060, 1060, 0), (True, True)),
        ((("Cache-Control", "s-maxage=60, max-age=1"),), (1060, 1060, 0), (True, True)),
        ((("Cache-Control", "no-cache"), *ETAG), (1000, 1000 + REVALIDATION_KEEP, 0), (True, True)),
        # A validator keeps the entry past its windows, for revalidation.
        (
            (("Cache-Control", "max-age=60"), *ETAG),
            (1060, 1060 + REVALIDATION_KEEP, 0),
            (False, True),
        ),
        (
            (("Cache-Control", "max-age=60"), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")),
            (1060, 1060 + REVALIDATION_KEEP, 0),
            (False, True),
        ),
    ],
)
def test_build_entry_on_origin_routes(
    headers: Headers, times: tuple[float, float, float], flags: tuple[bool, bool]
) -> None:
    e = origin_entry(WINDOWS, headers)
    assert (e.fresh_until, e.stale_until, e.initial_age) == times
    assert (e.must_revalidate, e.origin_lifetime) == flags
    assert age(e, 1000.0) == int(times[2])


def test_build_entry_keeps_the_app_validators_and_windows() -> None:
    headers = (
        ("ETag", 'W/"v1"'),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Cache-Control", "max-age=60, stale-while-revalidate=5, stale-if-error=7"),
    )
    e = origin_entry(ORIGIN, headers)
    assert (e.origin_etag, e.last_modified, e.etag) == ('W/"v1"', headers[1][1], 'W/"v1"')
    assert (e.stale_while_revalidate, e.stale_if_error) == (5.0, 7.0)
    computed = origin_entry(ORIGIN, (("Cache-Control", "max-age=60"),))
    assert computed.origin_etag is None and computed.etag.startswith('"sc-')
    # A route route trusts none of it.
    route = entry_for(replace(PHOTO, ttl=60), headers)
    assert (route.origin_etag, route.last_modified, route.must_revalidate) == (None, None, False)
    assert (route.stale_while_revalidate, route.stale_if_error) == (0.0, 0.0)
    assert (route.fresh_until, route.stale_until, route.origin_lifetime) == (1060, 1060, False)


def test_build_entry_counts_apparent_age_and_response_delay() -> None:
    headers = (("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Cache-Control", "max-age=600"))
    date = 784111777.0
    late = origin_entry(ORIGIN, headers, wall=date + 100)  # a Date 100 s old when received
    assert (late.initial_age, late.fresh_until) == (100.0, 1500.0)
    slow = origin_entry(ORIGIN, (*headers, ("Age", "30")), wall=date, requested_at=995.0)
    assert (slow.initial_age, slow.fresh_until) == (35.0, 1565.0)
    assert age(slow, 1010.0) == 45


@pytest.mark.parametrize(
    ("headers", "route", "states"),
    [
        # The app's windows extend the route's (fresh until 1060).
        (
            (("Cache-Control", "max-age=60, stale-while-revalidate=20, stale-if-error=50"),),
            replace(ORIGIN, stale_while_revalidate=10, stale_if_error=100),
            {1059: "fresh", 1079: "stale-while-revalidate", 1080: "stale-if-error", 1160: "-"},
        ),
        (
            (("Cache-Control", "max-age=60, stale-if-error=300"),),
            replace(ORIGIN, stale_while_revalidate=10, stale_if_error=100),
            {1069: "stale-while-revalidate", 1359: "stale-if-error", 1360: "-"},
        ),
        # Never stale, whatever the route's windows say.
        (
            (("Cache-Control", "max-age=60, must-revalidate, stale-if-error=300"),),
            replace(ORIGIN, stale_while_revalidate=10, stale_if_error=100),
            {1059: "fresh", 1060: "-"},
        ),
        (
            (("Cache-Control", "max-age=60, proxy-revalidate"),),
            replace(ORIGIN, stale_if_error=100),
            {1059: "fresh", 1060: "-"},
        ),
        (
            (("Cache-Control", "s-maxage=60"),),
            replace(ORIGIN, stale_if_error=100),
            {1059: "fresh", 1060: "-"},
        ),
        (
            (("Cache-Control", "no-cache"), *ETAG),
            replace(ORIGIN, ttl=300, stale_while_revalidate=10, stale_if_error=100),
            {1000: "-", 1005: "-"},
        ),
        # A route route: only its own windows, as always.
        (
            (("Cache-Control", "max-age=1, must-revalidate, stale-if-error=900"),),
            replace(PHOTO, ttl=60, stale_if_error=100),
            {1059: "fresh", 1060: "stale-if-error", 1159: "stale-if-error", 1160: "-"},
        ),
    ],
)
def test_freshness_and_stale_windows(
    headers: Headers, route: Route, states: dict[float, str]
) -> None:
    e = origin_entry(route, headers)
    for now, state in states.items():
        expected = Freshness.EXPIRED if state == "-" else Freshness(state)
        assert freshness(e, route, now) is expected, now  # type: ignore[arg-type]
        on_error = state in ("fresh", "stale-while-revalidate", "stale-if-error")
        if state == "stale-while-revalidate":
            on_error = now - e.fresh_until < stale_windows(e, route)[1]  # type: ignore[arg-type]
        assert usable_on_error(e, route, now) is on_error, now  # type: ignore[arg-type]
        # The store keeps it at least as long as any window can use it.
        if state != "-":
            assert now < e.stale_until


@pytest.mark.parametrize(
    ("headers", "ttl", "stale", "expected"),
    [
        # A route's lifetime counts again from storage; the app's stays.
        ((), 10.0, 5.0, (1010.0, 1015.0)),
        ((), None, 5.0, (1300.0, 1305.0)),
        ((("Cache-Control", "max-age=60"),), 10.0, 5.0, (1060.0, 1065.0)),
        ((("Cache-Control", "max-age=60, stale-if-error=30"),), 10.0, 5.0, (1060.0, 1090.0)),
        ((("Cache-Control", "max-age=60, must-revalidate"),), 600.0, 50.0, (1060.0, 1060.0)),
        ((("Cache-Control", "no-cache"), *ETAG), 600.0, 5.0, (1000.0, 1000 + REVALIDATION_KEEP)),
    ],
)
def test_retimed_after_a_reload(
    headers: Headers, ttl: float | None, stale: float, expected: tuple[float, float]
) -> None:
    e = origin_entry(replace(ORIGIN, ttl=300), headers)
    assert retimed(e, ttl, stale) == expected
    # Unchanged rules: unchanged times (the store re-times every entry it stores).
    assert retimed(e, 300, 0.0) == (e.fresh_until, e.stale_until)
    route = entry_for(replace(PHOTO, ttl=300), headers)
    assert retimed(route, 10.0, 5.0) == (1010.0, 1015.0)


@pytest.mark.parametrize(
    ("name", "a", "b", "same"),
    [
        ("x-foo", [("X-Foo", "1, 2")], [("X-Foo", "1"), ("X-Foo", "2")], True),
        ("x-foo", [("X-Foo", "1,2")], [("X-Foo", " 1 ,  2 ")], True),
        ("x-foo", [("X-Foo", "a")], [("X-Foo", "A")], False),
        ("x-foo", [("X-Foo", "1, 2")], [("X-Foo", "2, 1")], False),
        ("accept-language", [("Accept-Language", "en, de")], [("Accept-Language", "eN,De")], True),
        (
            "accept-language",
            [("Accept-Language", "en, de")],
            [("Accept-Language", "de, en")],
            False,
        ),
        ("accept", [("Accept", "Image/WebP, */*")], [("Accept", "image/webp,*/*")], True),
        ("accept", [("Accept", "a/b;Q=1")], [("Accept", "a/b ; q=1")], True),
        ("x-foo", [], [("X-Foo", "")], False),
    ],
)
def test_vary_values_are_normalised_before_keying(
    name: str, a: list[tuple[str, str]], b: list[tuple[str, str]], same: bool
) -> None:
    route = replace(PHOTO, vary=(name,))
    assert (key_of(route, a) == key_of(route, b)) is same
    learned = variant_of("k", (name,), CIMultiDict(a)) == variant_of("k", (name,), CIMultiDict(b))
    assert learned is same


@pytest.mark.parametrize(
    "headers",
    [
        {"Upgrade": "websocket"},  # no Connection: Upgrade
        {"Connection": "close", "Upgrade": "websocket"},
        {"Connection": "Upgrade", "Upgrade": "h2c"},  # not tunnelled: Upgrade is dropped
    ],
)
def test_other_upgrades_are_looked_up(headers: dict[str, str]) -> None:
    assert isinstance(run(headers=headers), Lookup)


def test_only_a_get_is_a_websocket_handshake() -> None:
    decision = run(method="POST", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert isinstance(decision, Bypass)
    assert decision.reason is BypassReason.METHOD
