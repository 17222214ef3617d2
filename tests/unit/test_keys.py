"""Path normalisation, query selection and key construction (proxy/keys.py)."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.config import DEFAULT_TRUSTED_PROXIES
from proxy.keys import (
    IPNetwork,
    build_key,
    credential_digest,
    forwarded_inputs,
    host_allowed,
    loose_path,
    normalise_accept_encoding,
    normalise_field,
    normalise_host,
    normalise_path,
    request_host,
    resolutions,
    select_query,
    split_absolute,
    trusted_peer,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/api/photo/12", "/api/photo/12"),
        ("/api/photo/12/", "/api/photo/12/"),
        # Unreserved characters are decoded, other escapes upper-cased (RFC 3986 6.2.2).
        ("/api/photo/%31%32", "/api/photo/12"),
        ("/a/%7euser", "/a/~user"),
        ("/a/%c3%a9", "/a/%C3%A9"),
        ("/a/%25", "/a/%25"),
        ("/a/b:c@d!$&'()*+,=", "/a/b:c@d!$&'()*+,="),
        # Ambiguous: never looked up, never stored.
        ("api/photo/1", None),
        ("", None),
        ("/api/photo%2F12", None),
        ("/api/photo%2f12", None),
        ("/api%5Cphoto", None),
        ("/api\\photo", None),
        ("/api/../admin", None),
        ("/api/./photo", None),
        ("/api/%2e%2e/admin", None),
        ("/api/%2E/photo", None),
        ("/api/photo/1;jsessionid=x", None),
        ("/api//photo", None),
        ("//api/photo", None),
        ("/api/photo%00", None),
        ("/api/photo%0a", None),
        ("/api/photo%7F", None),
        ("/api/photo#frag", None),
        ("/api/ph oto", None),
        ("/api/photo/\x01", None),
        ("/api/phöto", None),
        ("/bad/%zz", None),
        ("/bad/%4", None),
    ],
)
def test_normalise_path(raw: str, expected: str | None) -> None:
    assert normalise_path(raw) == expected


@pytest.mark.parametrize(
    ("query", "mode", "expected"),
    [
        ("", "all", ""),
        ("b=2&a=1", "all", "b=2&a=1"),
        ("b=2&a=1", "ignore", ""),
        ("w=100&sig=x&h=50", ("w", "h"), "h=50&w=100"),
        ("w=100&w=200", ("w",), "w=100&w=200"),
        # Kept parameters in canonical order: one entry, one upstream query.
        ("h=50&w=100", ("w", "h"), "h=50&w=100"),
        ("w=100&h=50", ("w", "h"), "h=50&w=100"),
        ("w=2&h=50&w=1", ("w", "h"), "h=50&w=2&w=1"),
        ("sig=x", ("w",), ""),
        ("", ("w",), ""),
        ("%77=1&x=2", ("w",), "%77=1"),
        ("a=1#frag", "all", None),
        ("a=\x00", "all", None),
        ("a=é", "all", None),
    ],
)
def test_select_query(query: str, mode: str | tuple[str, ...], expected: str | None) -> None:
    assert select_query(query, mode) == expected


def test_credential_digest_distinguishes_users_and_never_contains_them() -> None:
    pairs: list[tuple[list[str], list[str]]] = [
        ([], []),
        (["Bearer alice"], []),
        (["Bearer bob"], []),
        ([], ["session=alice"]),
        (["Bearer alice"], ["session=alice"]),
        # Concatenation tricks must not collide.
        (["ab"], ["c"]),
        (["a"], ["bc"]),
        ([""], []),
        ([], [""]),
        # Every line counts, in order: a second line is another user.
        ([], ["consent=yes", "session=attacker"]),
        ([], ["consent=yes"]),
        ([], ["session=attacker", "consent=yes"]),
        ([], ["consent=yes; session=attacker"]),
        ([], ["consent=yes", ""]),
        (["Bearer alice", "Bearer bob"], []),
        (["Bearer alice"], ["Bearer bob"]),
        (["Bearer bob", "Bearer alice"], []),
        (["a", "b"], ["c"]),
        (["a"], ["b", "c"]),
    ]
    digests = [credential_digest(a, c) for a, c in pairs]
    assert len(set(digests)) == len(pairs)
    for (a, c), d in zip(pairs, digests, strict=True):
        for secret in (*a, *c):
            if len(secret) > 4:
                assert secret not in d
    assert credential_digest(["Bearer alice"], []) == credential_digest(["Bearer alice"], [])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("photo", "h", "/p/1"), ("photo", "h", "/p/2")),
        (("photo", "h", "/p/1"), ("thumb", "h", "/p/1")),
        (("photo", "h", "/p/1"), ("photo", "other", "/p/1")),
        (("photo", "h", "/p/1?a=1"), ("photo", "h", "/p/1?a=2")),
    ],
)
def test_keys_differ_on_every_component(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert build_key(*a) != build_key(*b)


def test_vary_values_and_absence_are_distinct() -> None:
    base = ("photo", "h", "/p/1")
    absent = build_key(*base, vary=[("accept", None)])
    empty = build_key(*base, vary=[("accept", "")])
    webp = build_key(*base, vary=[("accept", "image/webp")])
    assert len({absent, empty, webp, build_key(*base)}) == 4


def test_credentials_join_the_key() -> None:
    base = ("mine", "h", "/my")
    alice = build_key(*base, credentials=credential_digest(["Bearer alice"], []))
    bob = build_key(*base, credentials=credential_digest(["Bearer bob"], []))
    assert alice != bob != build_key(*base)


def test_variant_keys_differ_by_value_and_by_absence() -> None:
    from proxy.keys import variant_key

    names = ("accept-language",)
    keys = {variant_key("base", names, [v]) for v in ("en", "fr", "", None)}
    assert len(keys) == 4
    assert all(k.startswith("base\nvary\n") for k in keys)


@pytest.mark.parametrize(
    ("raw", "scheme", "expected"),
    [
        ("photos.example", "http", "photos.example"),
        ("Photos.EXAMPLE.", "http", "photos.example"),
        ("photos.example:80", "http", "photos.example"),
        ("photos.example:080", "http", "photos.example"),
        ("photos.example:443", "http", "photos.example:443"),
        ("photos.example:443", "https", "photos.example"),
        ("photos.example:", "http", "photos.example"),
        ("127.0.0.1:8080", "http", "127.0.0.1:8080"),
        ("[::1]:8080", "http", "[::1]:8080"),
        ("[::1]:80", "http", "[::1]"),
        ("[FE80::1]", "http", "[fe80::1]"),
        (" photos.example ", "http", "photos.example"),
        ("under_score.example", "http", "under_score.example"),
        # Malformed: refused with 400.
        ("", "http", None),
        (".", "http", None),
        ("a..b", "http", None),
        (".a", "http", None),
        ("evil example", "http", None),
        ("user@photos.example", "http", None),
        ("photos.example:99999", "http", None),
        ("photos.example:8o", "http", None),
        ("photos.example:-1", "http", None),
        ("photos%2eexample", "http", None),
        ("[::1", "http", None),
        ("[zz]", "http", None),
        ("[::1]x", "http", None),
        ("ph\u00f6tos.example", "http", None),
        ("a" * 64 + ".example", "http", None),
        ("photos.example:\u0661", "http", None),
    ],
)
def test_normalise_host(raw: str, scheme: str, expected: str | None) -> None:
    assert normalise_host(raw, scheme) == expected


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("evil.example", (), True),
        ("photos.example", ("photos.example",), True),
        ("photos.example:8080", ("photos.example",), True),
        ("evil.example", ("photos.example",), False),
        ("photos.example.evil", ("photos.example",), False),
        ("a.cdn.example", ("*.cdn.example",), True),
        ("a.b.cdn.example:81", ("*.cdn.example",), True),
        ("cdn.example", ("*.cdn.example",), False),
        ("evilcdn.example", ("*.cdn.example",), False),
        ("[::1]:8080", ("[::1]",), True),
        ("anything", ("*",), True),
        ("", ("photos.example",), False),
    ],
)
def test_host_allowed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        ("/api/photo/1", "Photos.Example:80", "photos.example"),
        ("/api/photo/1", None, ""),
        ("/api/photo/1", "bad host", None),
        ("http://EVIL.example/api/photo/1", "photos.example", "evil.example"),
        ("https://evil.example:443/x", None, "evil.example"),
        ("HTTP://evil.example:8080?q", None, "evil.example:8080"),
        ("http://user@evil.example/x", None, None),
        ("ftp://evil.example/x", None, None),
        ("http:///x", None, None),
        ("*", "photos.example", None),
    ],
)
def test_request_host(target: str, host: str | None, expected: str | None) -> None:
    assert request_host(target, host) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://h/a/b?q=1", ("http", "h", "/a/b?q=1")),
        ("https://h:8443", ("https", "h:8443", "/")),
        ("http://h?q", ("http", "h", "/?q")),
        ("http://h/a#f", None),
        ("http://u:p@h/", None),
        ("h/a", None),
    ],
)
def test_split_absolute(target: str, expected: tuple[str, str, str] | None) -> None:
    assert split_absolute(target) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/c/del", {"/c/del", "/c/del/"}),
        ("/c/%31", {"/c/1", "/c/1/"}),
        ("/c/./x", {"/c/x", "/c/x/"}),
        ("/c/a/../x", {"/c/x", "/c/x/"}),
        ("/c/x/.", {"/c/x/", "/c/x"}),
        ("/c/..", {"/"}),
        ("/", {"/"}),
        ("/c/x;v=2", {"/c/x", "/c/x/"}),
        ("/c/x;a/..;/y", {"/c/y", "/c/y/"}),
        ("/c/%2e/x", {"/c/x", "/c/x/"}),
        ("/c/%2E%2E/x", {"/x", "/x/"}),
        ("/c%2Fx", {"/c/x", "/c/x/"}),
        ("/c%5cx", {"/c/x", "/c/x/"}),
        ("/c\\x", {"/c/x", "/c/x/"}),
        ("/c//x", {"/c/x", "/c/x/"}),
        ("/c/x#frag", {"/c/x", "/c/x/"}),
        ("/c/x%3Bv=1", {"/c/x", "/c/x/", "/c/x%3Bv=1", "/c/x%3Bv=1/"}),
        ("/c/x%3Bv=1/%2e%2e/y", {"/c/y", "/c/y/"}),
        # Trailing-slash spellings an app may read as /c/x.
        ("/c/x/", {"/c/x/", "/c/x"}),
        ("/c/x%2F", {"/c/x/", "/c/x"}),
        ("/c/x//", {"/c/x/", "/c/x"}),
        ("/c/x%2f%2f", {"/c/x/", "/c/x"}),
        ("/c/x\\", {"/c/x/", "/c/x"}),
        # Letter case is kept here (the store matches it loosely, see loose_path).
        ("/C/X", {"/C/X", "/C/X/"}),
        ("c/x", set()),
    ],
)
def test_resolutions_cover_every_path_an_app_may_read(raw: str, expected: set[str]) -> None:
    assert resolutions(raw) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/c/x", "/c/x"),
        ("/c/x/", "/c/x"),
        ("/C/X", "/c/x"),
        ("/c/X/", "/c/x"),
        ("/c/%C3%89t%C3%A9", "/c/\u00e9t\u00e9"),  # percent-encoded letters fold too
        ("/c/%c3%a9", "/c/\u00e9"),
        ("/c/x%20y", "/c/x y"),
        ("/c/Stra%C3%9Fe", "/c/strasse"),
        ("/c/%FF", "/c/\udcff"),  # not UTF-8: kept as the byte it was
    ],
)
def test_loose_path_folds_case_escapes_and_trailing_slashes(path: str, expected: str) -> None:
    assert loose_path(path) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/c/x",
        "/c/x/",
        "/C/X",
        "/c/X",
        "/c/x%2F",
        "/c/x/.",
        "/c/x//",
        "/c/x%2f%2f",
        "/c/x\\",
        "/C/X/",
    ],
)
def test_every_spelling_of_a_path_resolves_to_its_loose_form(raw: str) -> None:
    assert "/c/x" in {loose_path(p) for p in resolutions(raw)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),  # absent: any coding (RFC 9110 12.5.3), nothing forwarded
        # Present but accepting none of ours: identity, apart from absent.
        ("", "identity"),
        ("identity", "identity"),
        ("deflate", "identity"),
        ("gzip;q=0", "identity"),
        ("*;q=0", "identity"),
        ("gzip;q=0, identity", "identity"),
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip, deflate, br, zstd", "br, gzip, zstd"),
        ("br;q=1.0, gzip;q=0.8", "br, gzip"),
        ("gzip;q=0.000, br", "br"),
        # Every q parameter counts, wherever it stands.
        ("gzip;q=0;x=1", "identity"),
        ("gzip;x=1;q=0", "identity"),
        ("gzip; x=1 ; q=0.0", "identity"),
        ("gzip;x=1;q=0.5", "gzip"),
        ("gzip;q=1;q=0", "identity"),
        ("gzip ; q = 0", "identity"),
        ("gzip;level=0", "gzip"),
        ("gzip;Q=0", "identity"),
        # A weight that is not a qvalue refuses rather than guesses.
        ("gzip;q=0.0001", "identity"),
        ("gzip;q=2", "identity"),
        ("gzip;q=1.5", "identity"),
        ("gzip;q=-1", "identity"),
        ("gzip;q=", "identity"),
        ("gzip;q=0x1", "identity"),
        ("gzip;q=1.000, br;q=0.001", "br, gzip"),
        ("gzip, gzip;q=0", "identity"),  # refused once is refused
        ("*;q=0;x=1, gzip", "gzip"),
        ("*", "br, gzip, zstd"),
        ("*, br;q=0", "gzip, zstd"),
        ("*;q=0, gzip", "gzip"),
    ],
)
def test_normalise_accept_encoding(value: str | None, expected: str | None) -> None:
    assert normalise_accept_encoding(value) == expected
    assert normalise_accept_encoding(expected) == expected  # idempotent: fills send it


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("x-foo", None, None),
        ("x-foo", "", ""),
        ("x-foo", "1, 2", "1, 2"),
        ("x-foo", "1,2", "1, 2"),
        ("x-foo", " 1 ,\t2 ", "1, 2"),
        ("x-foo", "1, , 2,", "1, 2"),
        ("x-foo", "Mixed Case", "Mixed Case"),  # unknown fields keep their case
        ("x-foo", '"a ,b", c', '"a ,b", c'),  # nothing changes inside quotes
        ("x-foo", "2, 1", "2, 1"),  # nor the order
        ("accept-language", "EN-us, De;Q=0.5", "en-us, de;q=0.5"),
        ("accept-charset", "UTF-8,ISO-8859-1", "utf-8, iso-8859-1"),
        ("accept", "Text/HTML ; Level=1,IMAGE/*;q=0.8", "text/html;level=1, image/*;q=0.8"),
        ("accept", 'a/b;p="Keep This"', 'a/b;p="Keep This"'),
        ("accept-encoding", "GZIP, br", "br, gzip"),
    ],
)
def test_field_values_are_normalised_before_keying(
    name: str, value: str | None, expected: str | None
) -> None:
    assert normalise_field(name, value) == expected


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


@pytest.mark.parametrize(
    ("remote", "networks", "trusted"),
    [
        ("127.0.0.1", DEFAULT_TRUSTED_PROXIES, True),
        ("10.1.2.3", DEFAULT_TRUSTED_PROXIES, True),
        ("172.31.0.1", DEFAULT_TRUSTED_PROXIES, True),
        ("172.32.0.1", DEFAULT_TRUSTED_PROXIES, False),
        ("192.168.1.1", DEFAULT_TRUSTED_PROXIES, True),
        ("::1", DEFAULT_TRUSTED_PROXIES, True),
        ("fd00::1", DEFAULT_TRUSTED_PROXIES, True),
        ("::ffff:10.0.0.1", DEFAULT_TRUSTED_PROXIES, True),
        ("fe80::1%eth0", _networks("fe80::/10"), True),
        ("203.0.113.7", DEFAULT_TRUSTED_PROXIES, False),
        ("2001:db8::1", DEFAULT_TRUSTED_PROXIES, False),
        ("127.0.0.1", (), False),
        ("127.0.0.1", _networks("10.0.0.0/8"), False),
        ("203.0.113.7", _networks("203.0.113.7/32"), True),
        (None, DEFAULT_TRUSTED_PROXIES, False),
        ("", DEFAULT_TRUSTED_PROXIES, False),
        ("not-an-address", DEFAULT_TRUSTED_PROXIES, False),
    ],
)
def test_trusted_peer(remote: str | None, networks: tuple[IPNetwork, ...], trusted: bool) -> None:
    assert trusted_peer(remote, networks) is trusted


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), ()),
        ((("Accept", "a"), ("X-Forwarded-For", "1.2.3.4")), ()),  # the address is not keyed
        (
            (("Forwarded", "proto=https"), ("X-Forwarded-Proto", "https ")),
            (("x-forwarded-proto", "https"), ("forwarded", "proto=https")),
        ),
        (
            (("X-Forwarded-Host", "a"), ("x-forwarded-host", "b")),
            (("x-forwarded-host", "a, b"),),
        ),
    ],
)
def test_forwarded_inputs(
    headers: tuple[tuple[str, str], ...], expected: tuple[tuple[str, str], ...]
) -> None:
    assert forwarded_inputs(headers) == expected


def test_forwarded_inputs_split_the_key_only_when_present() -> None:
    base = ("photo", "photos.example", "/api/photo/1")
    assert build_key(*base, forwarded=()) == build_key(*base)
    http = build_key(*base, forwarded=[("x-forwarded-proto", "http")])
    https = build_key(*base, forwarded=[("x-forwarded-proto", "https")])
    assert len({build_key(*base), http, https}) == 3
