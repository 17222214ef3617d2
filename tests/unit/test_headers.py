"""Header rules (proxy/headers.py)."""

from __future__ import annotations

import pytest

from proxy import headers as h


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    given = (
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Proxy-Authorization", "Basic x"),
        ("TE", "trailers"),
        ("Trailer", "X-T"),
        ("Content-Type", "image/jpeg"),
        ("X-App", "kept"),
    )
    assert h.end_to_end(given) == (("Content-Type", "image/jpeg"), ("X-App", "kept"))


def test_request_headers_for_upstream_sets_forwarding_headers_and_distrusts_clients() -> None:
    given = (
        ("Host", "photos.example"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=6.6.6.6"),
        ("Via", "1.0 edge"),
        ("Content-Length", "5"),
        ("Expect", "100-continue"),
        ("If-None-Match", '"x"'),
        ("Range", "bytes=0-1"),
        ("Accept", "image/*"),
    )
    out = h.request_headers_for_upstream(
        given, client_ip="10.0.0.7", scheme="http", host="photos.example", fill=False
    )
    d = {n.lower(): v for n, v in out}
    assert "host" not in d  # the client library sets the upstream's own Host
    assert d["x-forwarded-for"] == "10.0.0.7"
    assert d["x-forwarded-host"] == "photos.example"
    assert d["x-forwarded-proto"] == "http"
    assert "forwarded" not in d
    assert d["via"] == "1.0 edge, 1.1 sidecache"
    assert "content-length" not in d and "expect" not in d
    assert d["if-none-match"] == '"x"' and d["range"] == "bytes=0-1"
    assert d["accept"] == "image/*"
    filled = {
        n.lower(): v
        for n, v in h.request_headers_for_upstream(
            given, client_ip="10.0.0.7", scheme="http", host="photos.example", fill=True
        )
    }
    assert "if-none-match" not in filled and "range" not in filled


def test_response_headers_drop_framing() -> None:
    given = (("Content-Length", "3"), ("Transfer-Encoding", "chunked"), ("ETag", '"a"'))
    assert h.response_headers_for_client(given) == (("ETag", '"a"'),)


def test_with_via_appends() -> None:
    assert h.with_via((("Via", "1.0 app"),)) == (("Via", "1.0 app, 1.1 sidecache"),)
    assert h.with_via(()) == (("Via", "1.1 sidecache"),)


@pytest.mark.parametrize(
    ("header", "etag", "match"),
    [
        ('"a"', '"a"', True),
        ('W/"a"', '"a"', True),
        ('"a"', 'W/"a"', True),
        ('"b", "a"', '"a"', True),
        ("*", '"a"', True),
        ('"b"', '"a"', False),
        ('"a', '"a"', False),
    ],
)
def test_if_none_match_uses_weak_comparison(header: str, etag: str, match: bool) -> None:
    assert h.if_none_match_matches(header, etag) is match


def test_computed_etag_is_strong_and_body_derived() -> None:
    a, b = h.compute_etag(b"one"), h.compute_etag(b"two")
    assert a != b and a == h.compute_etag(b"one")
    assert a.startswith('"') and a.endswith('"') and not a.startswith("W/")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"hit": True, "ttl": 299.7}, "sidecache; hit; ttl=299"),
        (
            {"hit": False, "fwd": "uri-miss", "fwd_status": 200, "stored": True},
            "sidecache; fwd=uri-miss; fwd-status=200; stored",
        ),
        (
            {"hit": False, "fwd": "bypass", "detail": "no-route"},
            "sidecache; fwd=bypass; detail=no-route",
        ),
    ],
)
def test_cache_status(kwargs: dict[str, object], expected: str) -> None:
    assert h.cache_status(**kwargs) == expected  # type: ignore[arg-type]


def test_get_helpers_are_case_insensitive() -> None:
    hs = (("Vary", "a"), ("vary", "b"))
    assert h.get(hs, "VARY") == "a"
    assert h.get_all(hs, "Vary") == ["a", "b"]
    assert h.get(hs, "x") is None


def test_fills_send_negotiation_headers_only_when_keyed_and_accept_encoding_normalised() -> None:
    given = (
        ("Accept-Language", "de"),
        ("Accept", "image/webp"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("User-Agent", "ua"),
    )

    def fill(keyed: tuple[str, ...] = ()) -> dict[str, str]:
        out = h.request_headers_for_upstream(
            given, client_ip="1.2.3.4", scheme="http", host="h", fill=True, keyed=keyed
        )
        return {n.lower(): v for n, v in out}

    plain = fill()
    assert "accept-language" not in plain and "accept" not in plain
    assert plain["accept-encoding"] == "br, gzip" and plain["user-agent"] == "ua"
    assert fill(("accept-language",))["accept-language"] == "de"
    passed = h.request_headers_for_upstream(
        given, client_ip="1.2.3.4", scheme="http", host="h", fill=False
    )
    assert ("Accept-Encoding", "gzip, deflate, br") in passed  # pass-through: as sent


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ([], True),
        ([b"image/webp", b""], True),
        ([b"caf\xc3\xa9"], True),  # UTF-8 obs-text: decoded and encoded back intact
        ([b"plain", b"a\xffb"], False),  # not UTF-8: would lose the byte
        ([b"\xe9t\xe9"], False),  # Latin-1
        ([b"\xed\xa0\x80"], False),  # an encoded surrogate is not UTF-8
        ([b"\xc3"], False),  # a truncated sequence
    ],
)
def test_forwardable_header_values(values: list[bytes], ok: bool) -> None:
    assert h.forwardable([(b"X-Name", v) for v in values]) is ok


def _fill(
    given: tuple[tuple[str, str], ...], keyed: tuple[str, ...] = (), *, fill: bool = True
) -> dict[str, list[str]]:
    out = h.request_headers_for_upstream(
        given, client_ip="1.2.3.4", scheme="http", host="h", fill=fill, keyed=keyed
    )
    seen: dict[str, list[str]] = {}
    for name, value in out:
        seen.setdefault(name.lower(), []).append(value)
    return seen


@pytest.mark.parametrize(
    "name",
    [
        # Scheme and prefix overrides.
        "X-Scheme",
        "X-Forwarded-Protocol",
        "X-Url-Scheme",
        "X-ARR-SSL",
        "X-Script-Name",
        # Client addresses.
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Cluster-Client-Ip",
        "X-ProxyUser-Ip",
        "X-Remote-Addr",
        # Negotiation-like headers and client hints.
        "Accept-Version",
        "Api-Version",
        "X-Api-Version",
        "Accept-Datetime",
        "Prefer",
        "X-Requested-With",
        "Sec-CH-UA-Mobile",
        "Sec-CH-Prefers-Color-Scheme",
        "DPR",
        "Width",
        "Viewport-Width",
        "Save-Data",
    ],
)
def test_fills_send_shaping_headers_only_when_keyed(name: str) -> None:
    given = ((name, "v"), ("User-Agent", "ua"))
    assert name.lower() not in _fill(given)
    assert _fill(given, (name.lower(),))[name.lower()] == ["v"]
    assert _fill(given, fill=False)[name.lower()] == ["v"]  # pass-through: as sent
    assert _fill(given)["user-agent"] == ["ua"]


def test_unkeyed_inputs_are_proxy_controlled_and_negotiation_is_not() -> None:
    # An app's Vary on a proxy-controlled header refuses the store (policy).
    assert {"x-scheme", "cf-connecting-ip", "x-script-name"} <= h.PROXY_CONTROLLED
    assert not (h.NEGOTIATION & h.PROXY_CONTROLLED)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ((), None),  # absent: nothing, which means any coding
        ((("Accept-Encoding", "identity"),), ["identity"]),
        ((("Accept-Encoding", "gzip;q=0"),), ["identity"]),
        ((("Accept-Encoding", ""),), ["identity"]),
        ((("Accept-Encoding", "deflate"),), ["identity"]),
        ((("Accept-Encoding", "gzip;q=0;x=1"),), ["identity"]),
        ((("Accept-Encoding", "gzip;q=0"), ("Accept-Encoding", "br")), ["br"]),
        ((("Accept-Encoding", "gzip, deflate, br"),), ["br, gzip"]),
        # A Connection option cannot drop it from a fill: the key holds it.
        ((("Accept-Encoding", "identity"), ("Connection", "accept-encoding")), ["identity"]),
    ],
)
def test_fills_send_accept_encoding_as_keyed(
    given: tuple[tuple[str, str], ...], sent: list[str] | None
) -> None:
    assert _fill(given).get("accept-encoding") == sent


@pytest.mark.parametrize(
    ("status", "reason", "headers", "expected"),
    [
        (
            103,
            "Early Hints",
            (("Link", "</a.css>; rel=preload"), ("Connection", "X-Hop"), ("X-Hop", "1")),
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
            b"Via: 1.1 sidecache\r\n\r\n",
        ),
        (
            102,
            "",
            (("Via", "1.1 app"),),
            b"HTTP/1.1 102\r\nVia: 1.1 app, 1.1 sidecache\r\n\r\n",
        ),
        # A value with a line break would end the head: left out, as is such a reason.
        (
            103,
            "Early\rHints",
            (("Link", "</a.css>\r\nX-Injected: 1"), ("Link", "</b.css>")),
            b"HTTP/1.1 103\r\nLink: </b.css>\r\nVia: 1.1 sidecache\r\n\r\n",
        ),
        (100, "Continue", (), None),  # answered by the proxy itself
        (101, "Switching Protocols", (("Upgrade", "websocket"),), None),
        (200, "OK", (), None),
    ],
)
def test_interim_for_client(
    status: int, reason: str, headers: tuple[tuple[str, str], ...], expected: bytes | None
) -> None:
    assert h.interim_for_client(status, reason, headers) == expected


def test_interim_for_client_writes_undecodable_bytes_back_as_received() -> None:
    value = b"</caf\xe9.css>".decode("utf-8", "surrogateescape")
    head = h.interim_for_client(103, "Early Hints", (("Link", value),))
    assert head is not None and b"Link: </caf\xe9.css>\r\n" in head


@pytest.mark.parametrize(
    "given",
    [
        (),
        (("Surrogate-Capability", 'sidecache="ESI/1.0"'),),
        (("surrogate-capability", 'edge="Surrogate/1.0"'), ("Surrogate-Capability", "x")),
    ],
)
def test_fills_announce_sidecache_as_a_surrogate_and_only_sidecache(
    given: tuple[tuple[str, str], ...],
) -> None:
    """W3C Edge Architecture: the device name Surrogate-Control may target, and
    never a client's claim on what is stored for everybody."""
    assert _fill(given)["surrogate-capability"] == ['sidecache="Surrogate/1.0"']
    assert _fill(given, ("surrogate-capability",))["surrogate-capability"] == [
        'sidecache="Surrogate/1.0"'
    ]
    # Pass-through: as sent, nothing added.
    assert _fill(given, fill=False).get("surrogate-capability", []) == [v for _, v in given]


TRUSTED_GIVEN = (
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-For", "198.51.100.2"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "shop.example"),
    ("Forwarded", "for=203.0.113.7;proto=https"),
)


@pytest.mark.parametrize(
    ("given", "trusted", "expected"),
    [
        (
            TRUSTED_GIVEN,
            True,
            {
                "x-forwarded-for": ["203.0.113.7, 198.51.100.2, 10.0.0.5"],
                "x-forwarded-proto": ["https"],
                "x-forwarded-host": ["shop.example"],
                "forwarded": ["for=203.0.113.7;proto=https"],
            },
        ),
        (
            TRUSTED_GIVEN,
            False,
            {
                "x-forwarded-for": ["10.0.0.5"],
                "x-forwarded-proto": ["http"],
                "x-forwarded-host": ["photos.example"],
            },
        ),
        (
            (),
            True,
            {
                "x-forwarded-for": ["10.0.0.5"],
                "x-forwarded-proto": ["http"],
                "x-forwarded-host": ["photos.example"],
            },
        ),
    ],
)
@pytest.mark.parametrize("fill", [False, True])
def test_a_trusted_peer_forwarding_headers_are_passed_on_others_replaced(
    given: tuple[tuple[str, str], ...],
    trusted: bool,
    expected: dict[str, list[str]],
    fill: bool,
) -> None:
    out = h.request_headers_for_upstream(
        given,
        client_ip="10.0.0.5",
        scheme="http",
        host="photos.example",
        fill=fill,
        trusted=trusted,
    )
    got: dict[str, list[str]] = {}
    for n, v in out:
        if n.lower().startswith(("x-forwarded", "forwarded")):
            got.setdefault(n.lower(), []).append(v)
    assert got == expected


@pytest.mark.parametrize(
    ("connection", "upgrade", "expected"),
    [
        ("Upgrade", "websocket", True),
        ("keep-alive, upgrade", "WebSocket", True),
        ("Upgrade", "h2c, websocket", True),
        ("Upgrade", "websocket/13", True),
        (None, "websocket", False),
        ("Upgrade", None, False),
        ("close", "websocket", False),
        ("Upgrade", "h2c", False),
        ("Upgrade-ish", "websocket", False),
    ],
)
def test_websocket_upgrade(connection: str | None, upgrade: str | None, expected: bool) -> None:
    assert h.websocket_upgrade(connection, upgrade) is expected


def test_the_tunnel_handshake_leaves_the_clients_websocket_fields_out() -> None:
    sent = (
        ("Cookie", "s=1"),
        ("Sec-WebSocket-Key", "abc"),
        ("Sec-WebSocket-Version", "13"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("Origin", "http://app"),
    )
    assert h.tunnel_handshake_headers(sent) == (("Cookie", "s=1"), ("Origin", "http://app"))
