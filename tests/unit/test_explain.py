"""``/explain``'s pure parts (proxy/explain.py): the question read from the query,
the key's fields, and the rule that gave an entry its lifetime."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import Address, RouteConfig
from proxy.explain import Question, digest, key_fields, lifetime_rule, read_question
from proxy.keys import build_key, credential_digest
from proxy.policy import Lookup, build_entry

LISTEN = Address(host="0.0.0.0", port=8080)
SECRET = "Bearer tOpSeCrEt"


def ask(url: list[str], h: list[str] = (), method: list[str] = (), peer: list[str] = ()) -> Any:  # type: ignore[assignment]
    return read_question(url, method, h, peer, LISTEN)


@pytest.mark.parametrize(
    ("url", "h", "method", "peer", "error"),
    [
        ([], [], [], [], "give exactly one url"),
        (["/a", "/b"], [], [], [], "give exactly one url"),
        (["api/photo/1"], [], [], [], "url must be a path"),
        (["/a b"], [], [], [], "url must not contain spaces"),
        (["/a"], [], ["G T"], [], "method must be an HTTP method token"),
        (["/a"], [], ["GET", "HEAD"], [], "give at most one method"),
        (["/a"], [SECRET], [], [], "h parameter 1 must be 'Name: value'"),
        (["/a"], ["Host: x", f"Bad Name: {SECRET}"], [], [], "h parameter 2 must be"),
        (["/a"], [f"X-A: {SECRET}\r\nX-B: b"], [], [], "h parameter 1 (X-A): the value"),
        (["/a"], ["X: y"] * 65, [], [], "at most 64 h parameters"),
        (["/a"], [], [], ["1.2.3.4", "5.6.7.8"], "give at most one peer"),
    ],
)
def test_a_wrong_question_names_the_parameter_never_a_value(
    url: list[str], h: list[str], method: list[str], peer: list[str], error: str
) -> None:
    said = read_question(url, method, h, peer, LISTEN)
    assert isinstance(said, str) and said.startswith(error)
    assert "tOpSeCrEt" not in said


@pytest.mark.parametrize(
    ("url", "h", "listen", "headers", "host_from"),
    [
        ("/a", [], LISTEN, (("Host", "127.0.0.1:8080"),), "listen"),
        ("/a", [], Address(host="::", port=80), (("Host", "[::1]:80"),), "listen"),
        ("/a", [], Address(host="10.0.0.1", port=81), (("Host", "10.0.0.1:81"),), "listen"),
        (
            "/a",
            ["host: x.example", "X-A:  b "],
            LISTEN,
            (("host", "x.example"), ("X-A", "b")),
            "header",
        ),
        ("http://x.example/a", [], LISTEN, (), "url"),
    ],
)
def test_the_host_comes_from_the_url_a_header_or_the_listen_address(
    url: str, h: list[str], listen: Address, headers: tuple[tuple[str, str], ...], host_from: str
) -> None:
    assert read_question([url], [], h, [], listen) == Question("GET", url, headers, None, host_from)


def test_method_and_peer_are_taken_as_given() -> None:
    said = ask(["/a"], method=["PURGE"], peer=["10.1.2.3"])
    assert isinstance(said, Question) and (said.method, said.peer) == ("PURGE", "10.1.2.3")


ROUTE = RouteConfig(name="photo", match="/p/{id}", ttl=300, vary=("accept", "x-lang"))


def test_key_fields_read_back_what_build_key_built_values_as_digests() -> None:
    creds = credential_digest([SECRET], [])
    key = build_key(
        "photo",
        "x.example:81",
        "/p/1?a=b",
        [("accept", "image/webp"), ("x-lang", None)],
        creds,
        [("x-forwarded-proto", "https")],
    )
    assert key_fields(key, ROUTE) == {
        "route": "photo",
        "host": "x.example:81",
        "target": "/p/1?a=b",
        "vary": {"accept": digest("image/webp"), "x-lang": None},
        "credentials": creds,
        "forwarded": ["x-forwarded-proto"],
    }
    plain = RouteConfig(name="photo", match="/p/{id}", ttl=300)
    assert key_fields(build_key("photo", "h", "/p/1"), plain) == {
        "route": "photo",
        "host": "h",
        "target": "/p/1",
        "vary": {},
        "credentials": None,
        "forwarded": [],
    }


DATE = "Tue, 24 Nov 2026 10:00:00 GMT"
MODIFIED = "Tue, 24 Nov 2026 09:00:00 GMT"
EXPIRES = "Tue, 24 Nov 2026 10:01:00 GMT"


@pytest.mark.parametrize(
    ("freshness", "ttl", "headers", "rule", "fresh_for"),
    [
        ("origin", 300, (("Cache-Control", "s-maxage=30, max-age=10"),), "s-maxage", 30),
        ("origin", 300, (("Cache-Control", "max-age=10"),), "max-age", 10),
        (
            "origin",
            300,
            (("Date", DATE), ("Expires", EXPIRES)),
            "expires",
            60,
        ),
        ("origin", None, (("Date", DATE), ("Last-Modified", MODIFIED)), "heuristic", 360),
        ("origin", 300, (("Date", DATE), ("Last-Modified", MODIFIED)), "ttl", 300),
        ("origin", 300, (), "ttl", 300),
        ("origin", None, (("ETag", '"e"'),), "none", 0),
        ("origin", 300, (("Cache-Control", "no-cache"), ("ETag", '"e"')), "no-cache", 0),
        ("route", 300, (("Cache-Control", "max-age=10"),), "ttl", 300),
    ],
)
def test_the_lifetime_rule_is_the_one_that_gave_the_entry_its_lifetime(
    freshness: str,
    ttl: float | None,
    headers: tuple[tuple[str, str], ...],
    rule: str,
    fresh_for: float,
) -> None:
    route = RouteConfig(name="photo", match="/p/{id}", ttl=ttl, freshness=freshness)
    lookup = Lookup(route, "photo\nh\n/p/1", "/p/1", "/p/1", False)
    entry = build_entry(lookup, 200, headers, b"body", now=1000.0)
    said = lifetime_rule(entry, route)
    assert (said["rule"], said["fresh_for_s"]) == (rule, fresh_for)
