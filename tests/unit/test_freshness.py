"""Freshness from the origin (proxy/freshness.py): directives, dates, ages, lifetimes."""

from __future__ import annotations

from dataclasses import replace
from email.utils import formatdate

import pytest

from proxy.freshness import (
    HEURISTIC_CAP,
    MAX_DELTA,
    UNDERSTOOD_STATUSES,
    Basis,
    Directives,
    assess,
    directives,
    from_surrogate_control,
    parse_age,
    parse_cache_control,
    parse_http_date,
    parse_sf_dictionary,
    split_list,
)

NOW = 1_800_000_000.0  # the wall clock when the response arrives, in these tests


def date(offset: float) -> str:
    """An IMF-fixdate ``offset`` seconds from ``NOW``."""
    return formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize(
    ("value", "members"),
    [
        ("a, b", ["a", "b"]),
        (" a ,b ,, ", ["a", "b"]),
        ('x="1, 2", y', ['x="1, 2"', "y"]),
        ('x="a \\" , b", y', ['x="a \\" , b"', "y"]),
        ("", []),
    ],
)
def test_split_list(value: str, members: list[str]) -> None:
    assert split_list(value) == members


@pytest.mark.parametrize(
    ("lines", "parsed"),
    [
        (["max-age=60"], {"max-age": "60"}),
        (["MaX-AgE=60, Public"], {"max-age": "60", "public": None}),
        (['max-age="60"'], {"max-age": "60"}),  # quoted-string form
        (["max-age='60'"], {"max-age": "'60'"}),  # kept, found invalid later
        (["max-age= 60"], {"max-age": " 60"}),
        (["max-age =60"], {}),  # not a token: ignored
        (['ext="max-age=3600", max-age=1'], {"ext": "max-age=3600", "max-age": "1"}),
        (["max-age=1800, max-age=1"], {"max-age": "1800"}),  # the first occurrence
        (["max-age=1", "max-age=1800"], {"max-age": "1"}),
        (['no-cache="Set-Cookie, X-A", private'], {"no-cache": "Set-Cookie, X-A", "private": None}),
        ([" , ,no-store"], {"no-store": None}),
        (['x="a\\"b", y="c\\\\"'], {"x": 'a"b', "y": "c\\"}),  # quoted-pair escapes
        (['x="a"b"'], {"x": '"a"b"'}),  # not one quoted string: kept as sent
        (['x="a\\"'], {"x": '"a\\"'}),
    ],
)
def test_cache_control_parsing(lines: list[str], parsed: dict[str, str | None]) -> None:
    assert parse_cache_control(lines) == parsed


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("max-age=60", {"max-age": 60}),
        ("no-store, max-age=60", {"no-store": True, "max-age": 60}),
        ('a="x", b=?0, c=1.5, d=tok/en, e=:aGk=:', {"a": "x", "b": False, "c": 1.5}),
        ("a=(1 2);p=1, b;q", {"a": (1, 2), "b": True}),
        ("max-age=1, max-age=2", {"max-age": 2}),  # RFC 8941: the last one counts
        ("max-age =60", None),
        ("max-age= 60", None),
        ("MaX-aGe=60", None),  # keys are lower-case
        ("max-age=60, &&&", None),
        ("max-age=60,", None),
        ('a="unterminated', None),
        ('a="q\\"q\\\\", b=-12', {"a": 'q"q\\', "b": -12}),
        ('a="bad \\escape"', None),
        ('a="tab\there"', None),
        ("a=?2", None),
        ("a=(1 2", None),
        ("a=(1,2)", None),
        ("a=1;", None),
        ("", None),
    ],
)
def test_structured_field_dictionaries(value: str, parsed: dict[str, object] | None) -> None:
    found = parse_sf_dictionary([value])
    if parsed is None:
        assert found is None
    else:
        assert found is not None
        assert {k: v for k, v in found.items() if k in parsed} == parsed


H = list[tuple[str, str]]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], Directives()),
        ([("Cache-Control", "max-age=60, public")], Directives(max_age=60, public=True)),
        ([("Cache-Control", "max-age=-1")], Directives(max_age=0)),  # invalid: stale
        ([("Cache-Control", "max-age=3600.5")], Directives(max_age=0)),
        ([("Cache-Control", "max-age")], Directives(max_age=0)),
        ([("Cache-Control", "max-age=99999999999")], Directives(max_age=MAX_DELTA)),
        ([("Cache-Control", "max-age=003600")], Directives(max_age=3600)),
        ([("Cache-Control", "s-maxage=10")], Directives(s_maxage=10)),
        (
            [("Cache-Control", "no-cache, must-revalidate, proxy-revalidate")],
            Directives(no_cache=True, must_revalidate=True, proxy_revalidate=True),
        ),
        ([("Cache-Control", 'no-cache="Set-Cookie"')], Directives(no_cache=True)),
        ([("Cache-Control", 'private="X-User"')], Directives(private=True)),
        (
            [("Cache-Control", "stale-while-revalidate=30, stale-if-error=600")],
            Directives(stale_while_revalidate=30, stale_if_error=600),
        ),
        ([("Cache-Control", "stale-if-error=soon")], Directives()),  # an invalid window: none
        # CDN-Cache-Control replaces Cache-Control (RFC 9213), both ways.
        (
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=3600")],
            Directives(max_age=3600, targeted=True),
        ),
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")],
            Directives(max_age=10000, targeted=True),
        ),
        (
            [("Cache-Control", "max-age=10000"), ("CDN-Cache-Control", "private")],
            Directives(private=True, targeted=True),
        ),
        (
            [("CDN-Cache-Control", "no-cache=?0, must-revalidate, stale-if-error=60")],
            Directives(must_revalidate=True, stale_if_error=60, targeted=True),
        ),
        # An invalid one is ignored as a whole: Cache-Control applies.
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", 'max-age="10000"')],
            Directives(no_store=True),
        ),
        (
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=-5")],
            Directives(no_store=True),
        ),
        (
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age =100")],
            Directives(max_age=1),
        ),
        ([("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "")], Directives(max_age=1)),
    ],
)
def test_directives(headers: H, expected: Directives) -> None:
    assert directives(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Cache-Control", "must-understand")], Directives(must_understand=True)),
        (
            [("Cache-Control", "no-store, Must-Understand, max-age=60")],
            Directives(no_store=True, must_understand=True, max_age=60),
        ),
        (
            [("CDN-Cache-Control", "must-understand, no-store")],
            Directives(no_store=True, must_understand=True, targeted=True),
        ),
        ([("CDN-Cache-Control", "must-understand=?0")], Directives(targeted=True)),
    ],
)
def test_must_understand_is_read(headers: H, expected: Directives) -> None:
    assert directives(headers) == expected


def test_the_understood_statuses_are_those_rfc_9110_defines() -> None:
    defined = {200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 307, 308}
    defined |= {400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413}
    defined |= {414, 415, 416, 417, 421, 422, 426, 500, 501, 502, 503, 504, 505}
    assert defined == UNDERSTOOD_STATUSES
    assert {306, 418, 429, 451, 499, 599}.isdisjoint(UNDERSTOOD_STATUSES)


SC = Directives(targeted=True)


# Surrogate-Control lines -> the directives sidecache takes from them, None when
# none is for it (then Cache-Control applies).
@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], None),
        ([""], None),
        (["max-age=3600"], replace(SC, max_age=3600)),
        (["no-store"], replace(SC, no_store=True)),
        (["no-store, max-age=60"], replace(SC, no_store=True, max_age=60)),
        (["MaX-aGe=3600"], replace(SC, max_age=3600)),  # names in any case
        (["NO-STORE"], replace(SC, no_store=True)),
        (["max-age=2147483648"], replace(SC, max_age=MAX_DELTA)),
        (["max-age=99999999999"], replace(SC, max_age=MAX_DELTA)),  # capped
        (["max-age=0"], replace(SC, max_age=0)),
        (['max-age="60"'], replace(SC, max_age=60)),
        (["max-age=60+30"], replace(SC, max_age=60)),  # the stale part dropped
        (["foobar, max-age=3600"], replace(SC, max_age=3600)),  # extensions ignored
        (['content="ESI/1.0", max-age=60'], replace(SC, max_age=60)),
        (['content="ESI/1.0"'], None),
        (["no-store-remote"], None),  # sidecache sits next to the app
        (["foo"], None),
        # Targeting: at sidecache (any case, any spaces) or nobody in particular.
        (["max-age=3600;sidecache"], replace(SC, max_age=3600)),
        (["max-age=3600 ; SideCache"], replace(SC, max_age=3600)),
        (["no-store;sidecache"], replace(SC, no_store=True)),
        (["max-age=3600;not-for-you"], None),
        (["no-store;other, max-age=60"], replace(SC, max_age=60)),
        (["max-age=60;sidecache;other"], None),  # one device token at most
        # One targeted at sidecache replaces an untargeted one of the same name.
        (["max-age=60, max-age=3600;sidecache"], replace(SC, max_age=3600)),
        (["max-age=3600;sidecache, max-age=60"], replace(SC, max_age=3600)),
        (["no-store, max-age=60;sidecache"], replace(SC, no_store=True, max_age=60)),
        # The first occurrence counts, across lines too.
        (["max-age=60, max-age=3600"], replace(SC, max_age=60)),
        (["max-age=60", "max-age=3600"], replace(SC, max_age=60)),
        # A max-age that is not delta-seconds is ignored, not read as stale.
        (["max-age =100"], None),
        (["max-age= 100"], None),
        (["max-age=-1"], None),
        (["max-age=1.5"], None),
        (["max-age"], None),
        (["max-age=abc, max-age=60"], replace(SC, max_age=60)),
        (["no-store=1"], None),
    ],
)
def test_surrogate_control_parsing(lines: list[str], expected: Directives | None) -> None:
    assert from_surrogate_control(lines) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Surrogate-Control replaces Cache-Control, both ways, when it says
        # something to sidecache.
        (
            [("Cache-Control", "max-age=3600"), ("Surrogate-Control", "max-age=1")],
            replace(SC, max_age=1),
        ),
        (
            [("Cache-Control", "max-age=1"), ("Surrogate-Control", "max-age=3600")],
            replace(SC, max_age=3600),
        ),
        (
            [("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=10000;sidecache")],
            replace(SC, max_age=10000),
        ),
        (
            [("Cache-Control", "max-age=10000"), ("Surrogate-Control", "no-store")],
            replace(SC, no_store=True),
        ),
        (
            [("Cache-Control", "private, must-revalidate"), ("Surrogate-Control", "max-age=60")],
            replace(SC, max_age=60),
        ),
        # Nothing for sidecache: Cache-Control applies.
        (
            [("Cache-Control", "max-age=1"), ("Surrogate-Control", "max-age=3600;not-for-you")],
            Directives(max_age=1),
        ),
        (
            [("Cache-Control", "max-age=1"), ("Surrogate-Control", "max-age =100")],
            Directives(max_age=1),
        ),
        ([("Cache-Control", "no-store"), ("Surrogate-Control", "foo")], Directives(no_store=True)),
        # A valid CDN-Cache-Control comes first (RFC 9213); an invalid one does not.
        (
            [("CDN-Cache-Control", "max-age=5"), ("Surrogate-Control", "max-age=3600")],
            Directives(max_age=5, targeted=True),
        ),
        (
            [("CDN-Cache-Control", "max-age =5"), ("Surrogate-Control", "max-age=3600")],
            replace(SC, max_age=3600),
        ),
    ],
)
def test_surrogate_control_precedence(headers: H, expected: Directives) -> None:
    assert directives(headers) == expected


@pytest.mark.parametrize(
    ("headers", "no_stale", "shareable"),
    [
        ("", False, False),
        ("max-age=60", False, False),
        ("public", False, True),
        ("must-revalidate", True, True),
        ("proxy-revalidate", True, False),  # not in RFC 9111 section 3.5's list
        ("s-maxage=60", True, True),  # implies proxy-revalidate
        ("no-cache", True, False),
    ],
)
def test_what_directives_imply(headers: str, no_stale: bool, shareable: bool) -> None:
    d = directives([("Cache-Control", headers)])
    assert (d.no_stale, d.shareable_with_credentials) == (no_stale, shareable)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),
        ("Sun Nov  6 08:49:37 1994", 784111777.0),
        ("SUN, 06 NOV 1994 08:49:37 gmt", 784111777.0),  # names in any case
        ("  Sun, 06 Nov 1994 08:49:37 GMT ", 784111777.0),
        ("Sun, 21 Nov 2286 04:46:39 GMT", 10000039599.0),
        ("Thu, 31 Dec 2015 23:59:60 GMT", 1451606400.0),  # a leap second
        ("Thursday, 18-Aug-50 02:01:18 GMT", 2544400878.0),  # 2050, not 1950
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 94 08:49:37 GMT", None),
        ("Sun 06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06  Nov  1994 08:49:37 GMT", None),
        ("Sun, 06-Nov-1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08.49.37 GMT", None),
        ("Sun, 06 Nov 1994 8:49:37 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("0", None),
        ("-1", None),
        ("", None),
    ],
)
def test_http_dates(value: str, seconds: float | None) -> None:
    assert parse_http_date(value, NOW) == seconds


def test_two_digit_years_more_than_50_years_ahead_are_in_the_past() -> None:
    in_2027 = 1_800_000_000.0
    assert parse_http_date("Friday, 01-Jan-77 00:00:00 GMT", in_2027) == 3376684800.0  # 2077
    assert parse_http_date("Sunday, 01-Jan-78 00:00:00 GMT", in_2027) == 252460800.0  # 1978
    assert parse_http_date("Friday, 01-Jan-77 00:00:00 GMT", None) == 220924800.0
    assert parse_http_date("Friday, 01-Jan-60 00:00:00 GMT", None) == 2840140800.0  # 2060


# Valid: exactly one line of digits. Invalid (None): anything else, the
# conformance suite's age-parse-* values among them.
@pytest.mark.parametrize(
    ("lines", "age"),
    [
        ([], 0.0),
        (["7200"], 7200.0),
        (["0"], 0.0),
        ([" 7200\t"], 7200.0),  # surrounding whitespace is not the value
        (["003600"], 3600.0),
        (["99999999999"], float(MAX_DELTA)),
        (["abc"], None),
        (["-7200"], None),
        (["+7200"], None),
        (["7200.0"], None),
        (["7200,0"], None),
        (["0,7200"], None),  # age-parse-prefix wants this one reused: not here
        (["0, 0"], None),
        (["3600, 3600"], None),
        (["7200", "0"], None),
        (["0", "7200"], None),
        (["0", "0"], None),
        (["7200;foo=bar"], None),
        (["7200;foo=111"], None),
        (['"7200"'], None),
        (["7 200"], None),
        (["\u0667\u0662"], None),  # digits, but not ASCII ones
        ([""], None),
    ],
)
def test_age_header(lines: list[str], age: float | None) -> None:
    assert parse_age(lines) == age


@pytest.mark.parametrize(
    "age", ["abc", "-7200", "7200.0", "7200,0", "0, 0", "3600, 3600", "7200;foo=bar", ""]
)
@pytest.mark.parametrize(
    "headers",
    [
        [("Cache-Control", "max-age=3600")],
        [("Cache-Control", "s-maxage=3600")],
        [("Expires", date(3600))],
        [("Surrogate-Control", "max-age=3600")],
        [("Last-Modified", date(-365 * 86400))],  # heuristic
    ],
)
def test_an_invalid_age_makes_a_response_stale_on_arrival(age: str, headers: H) -> None:
    a = assess(200, [("Date", date(0)), *headers, ("Age", age)], response_time=NOW)
    assert a.fresh_for == 0.0 and a.lifetime > 0.0
    assert a.age == 0.0  # what the Age a hit shows starts from: the value is unusable
    valid = assess(200, [("Date", date(0)), *headers, ("Age", "10")], response_time=NOW)
    assert valid.fresh_for == a.lifetime - 10.0


@pytest.mark.parametrize("lines", [["0", "0"], ["0", "7200"], ["7200", "0"]])
def test_two_age_lines_make_a_response_stale_on_arrival(lines: list[str]) -> None:
    headers = [("Cache-Control", "max-age=3600"), *(("Age", v) for v in lines)]
    assert assess(200, headers, response_time=NOW).fresh_for == 0.0


def test_an_invalid_age_leaves_the_route_default_alone() -> None:
    """The route's ttl counts from arrival and never reads the age."""
    a = assess(200, [("Age", "abc")], response_time=NOW, default_ttl=60)
    assert (a.basis, a.fresh_for) == (Basis.DEFAULT, 60.0)


# (status, headers, default ttl) -> (basis, lifetime, age, fresh for); the response
# arrives at NOW with no response delay unless said.
@pytest.mark.parametrize(
    ("status", "headers", "ttl", "expected"),
    [
        # Explicit: s-maxage > max-age > Expires - Date.
        (200, [("Cache-Control", "max-age=60")], None, (Basis.MAX_AGE, 60, 0, 60)),
        (200, [("Cache-Control", "max-age=60")], 300, (Basis.MAX_AGE, 60, 0, 60)),
        (200, [("Cache-Control", "max-age=60, s-maxage=5")], 300, (Basis.S_MAXAGE, 5, 0, 5)),
        (200, [("Cache-Control", "max-age=0, s-maxage=60")], None, (Basis.S_MAXAGE, 60, 0, 60)),
        (
            200,
            [("Date", date(0)), ("Expires", date(600)), ("Cache-Control", "max-age=60")],
            None,
            (Basis.MAX_AGE, 60, 0, 60),
        ),
        (200, [("Date", date(0)), ("Expires", date(600))], 5, (Basis.EXPIRES, 600, 0, 600)),
        (200, [("Date", date(0)), ("Expires", date(-600))], 300, (Basis.EXPIRES, 0, 0, 0)),
        (200, [("Date", date(0)), ("Expires", date(0))], None, (Basis.EXPIRES, 0, 0, 0)),
        (200, [("Date", date(400)), ("Expires", date(300))], None, (Basis.EXPIRES, 0, 0, 0)),
        # An invalid Expires, or two of them, means already expired.
        (200, [("Date", date(0)), ("Expires", "0")], 300, (Basis.EXPIRES, 0, 0, 0)),
        (
            200,
            [("Date", date(0)), ("Expires", date(600)), ("Expires", date(600))],
            None,
            (Basis.EXPIRES, 0, 0, 0),
        ),
        # Without a Date, Expires counts from when the response arrived.
        (200, [("Expires", date(600))], None, (Basis.EXPIRES, 600, 0, 600)),
        (200, [("Date", "yesterday"), ("Expires", date(600))], None, (Basis.EXPIRES, 600, 0, 600)),
        # Any status with explicit freshness; others need a status or public.
        (500, [("Cache-Control", "max-age=60")], None, (Basis.MAX_AGE, 60, 0, 60)),
        (302, [("Cache-Control", "max-age=60")], 300, (Basis.MAX_AGE, 60, 0, 60)),
        (302, [], 300, (Basis.UNCACHEABLE, 0, 0, 0)),
        (403, [("Last-Modified", date(-86400))], None, (Basis.UNCACHEABLE, 0, 0, 0)),
        (403, [("Cache-Control", "public")], 300, (Basis.DEFAULT, 300, 0, 300)),
        (
            599,
            [("Cache-Control", "public"), ("Last-Modified", date(-86400))],
            None,
            (Basis.HEURISTIC, 8640, 0, 8640),
        ),
        # No explicit freshness: the route's default, else the heuristic, else none.
        (200, [], 300, (Basis.DEFAULT, 300, 0, 300)),
        (404, [("Last-Modified", date(-86400))], 300, (Basis.DEFAULT, 300, 0, 300)),
        (404, [("Last-Modified", date(-86400))], None, (Basis.HEURISTIC, 8640, 0, 8640)),
        (200, [("Last-Modified", date(-50))], None, (Basis.HEURISTIC, 5, 0, 5)),
        (
            200,
            [("Date", date(0)), ("Last-Modified", date(-365 * 86400))],
            None,
            (Basis.HEURISTIC, HEURISTIC_CAP, 0, HEURISTIC_CAP),
        ),
        (200, [("Last-Modified", date(60))], None, (Basis.HEURISTIC, 0, 0, 0)),  # in the future
        (200, [("Last-Modified", "long ago")], None, (Basis.NONE, 0, 0, 0)),
        (200, [], None, (Basis.NONE, 0, 0, 0)),
        (204, [("ETag", '"v1"')], None, (Basis.NONE, 0, 0, 0)),
        # Invalid explicit freshness: stale, never the default.
        (200, [("Cache-Control", "max-age=a3600")], 300, (Basis.MAX_AGE, 0, 0, 0)),
        (200, [("Cache-Control", "max-age='3600'")], 300, (Basis.MAX_AGE, 0, 0, 0)),
        (200, [("Cache-Control", "max-age=-3600")], 300, (Basis.MAX_AGE, 0, 0, 0)),
        # no-cache: stored, but fresh for no time at all.
        (200, [("Cache-Control", "no-cache, max-age=60")], None, (Basis.MAX_AGE, 60, 0, 0)),
        (200, [("Cache-Control", "no-cache")], 300, (Basis.DEFAULT, 300, 0, 0)),
        # CDN-Cache-Control: its max-age, and Expires ignored with it.
        (
            200,
            [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1")],
            None,
            (Basis.MAX_AGE, 1, 0, 1),
        ),
        (
            200,
            [("CDN-Cache-Control", "public"), ("Date", date(0)), ("Expires", date(600))],
            30,
            (Basis.DEFAULT, 30, 0, 30),
        ),
        # Surrogate-Control: its max-age, and Expires ignored with it.
        (
            200,
            [("Surrogate-Control", "max-age=0"), ("Date", date(0)), ("Expires", date(10000))],
            None,
            (Basis.MAX_AGE, 0, 0, 0),
        ),
        (
            200,
            [("Surrogate-Control", "max-age=3600"), ("Date", date(0)), ("Expires", date(-10000))],
            None,
            (Basis.MAX_AGE, 3600, 0, 3600),
        ),
        (
            200,
            [("Surrogate-Control", "max-age=3600"), ("Date", date(0)), ("Expires", "0")],
            None,
            (Basis.MAX_AGE, 3600, 0, 3600),
        ),
        (
            200,
            [("Surrogate-Control", "max-age=3600"), ("Date", date(0)), ("Age", "7200")],
            None,
            (Basis.MAX_AGE, 3600, 7200, 0),
        ),
        (
            200,
            [("Surrogate-Control", "max-age=3600;not-for-you"), ("Date", date(0))],
            None,
            (Basis.NONE, 0, 0, 0),
        ),
        # An invalid Date counts as absent: Expires minus the arrival (RFC 9110
        # section 6.6.1), as does a Date given twice.
        (200, [("Date", "foo"), ("Expires", date(10))], None, (Basis.EXPIRES, 10, 0, 10)),
        (
            200,
            [("Date", date(-100)), ("Date", date(-100)), ("Expires", date(10))],
            None,
            (Basis.EXPIRES, 10, 0, 10),
        ),
        (
            200,
            [("Date", "foo"), ("Last-Modified", date(-1000))],
            None,
            (Basis.HEURISTIC, 100, 0, 100),
        ),
        # The age already spent: Age, and Date against the arrival (apparent age).
        (
            200,
            [("Date", date(0)), ("Cache-Control", "max-age=3600"), ("Age", "7200")],
            None,
            (Basis.MAX_AGE, 3600, 7200, 0),
        ),
        (200, [("Cache-Control", "max-age=60"), ("Age", "20")], None, (Basis.MAX_AGE, 60, 20, 40)),
        (
            200,
            [("Date", date(-7200)), ("Cache-Control", "max-age=3600")],
            None,
            (Basis.MAX_AGE, 3600, 7200, 0),
        ),
        (
            200,
            [("Date", date(-10)), ("Expires", date(10)), ("Age", "5")],
            None,
            (Basis.EXPIRES, 20, 10, 10),
        ),
        (
            200,
            [("Date", date(10)), ("Expires", date(20)), ("Age", "15")],
            None,
            (Basis.EXPIRES, 10, 15, 0),  # a fast Date: no apparent age, Age counts
        ),
        # A route default counts from arrival, whatever the age.
        (200, [("Age", "100")], 60, (Basis.DEFAULT, 60, 100, 60)),
    ],
)
def test_lifetimes(
    status: int, headers: H, ttl: float | None, expected: tuple[Basis, float, float, float]
) -> None:
    a = assess(status, headers, response_time=NOW, default_ttl=ttl)
    assert (a.basis, a.lifetime, a.age, a.fresh_for) == expected


def test_the_response_delay_adds_to_the_age() -> None:
    headers = [("Date", date(0)), ("Cache-Control", "max-age=60"), ("Age", "10")]
    a = assess(200, headers, response_time=NOW, response_delay=3.0)
    assert (a.age, a.fresh_for) == (13.0, 47.0)
    # The apparent age wins when it is larger (RFC 9111 section 4.2.3).
    late = assess(200, [*headers[1:], ("Date", date(-30))], response_time=NOW, response_delay=3.0)
    assert (late.age, late.fresh_for) == (30.0, 30.0)


def test_without_a_wall_clock_the_date_is_the_arrival() -> None:
    headers = [("Date", date(-7200)), ("Cache-Control", "max-age=3600"), ("Age", "10")]
    a = assess(200, headers, response_time=None)
    assert (a.age, a.fresh_for) == (10.0, 3590.0)
    expires = [("Date", date(-7200)), ("Expires", date(-7100))]
    assert assess(200, expires, response_time=None).fresh_for == 100.0
    # Nothing to count Expires from: expired.
    assert assess(200, [("Expires", date(600))], response_time=None).fresh_for == 0.0
    assert assess(200, [("Last-Modified", date(-100))], response_time=None).basis is Basis.NONE


def test_listed_statuses_replace_the_heuristically_cacheable_ones() -> None:
    assert assess(302, [], response_time=NOW, default_ttl=60, implicit=(200, 302)).fresh_for == 60
    assert assess(404, [], response_time=NOW, default_ttl=60, implicit=(200,)).basis is (
        Basis.UNCACHEABLE
    )
