"""The conformance harness's own logic (bench/conformance.py): kinds, scores, who a
5xx came from, the logs it reads and the config it writes."""

from __future__ import annotations

import pytest
import yaml

from bench.conformance import (
    Answer,
    Kind,
    Origin5xx,
    Row,
    Score,
    Served,
    attribute_5xx,
    definitions,
    describe,
    failing,
    kind_of,
    parse_access_log,
    parse_answers,
    score,
    sidecache_5xx,
    sidecache_config,
    table,
    totals,
)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, Kind.REQUIRED),
        ("required", Kind.REQUIRED),
        ("optimal", Kind.OPTIONAL),
        ("check", Kind.CHECK),
    ],
)
def test_kinds_as_the_suite_counts_them(raw: str | None, kind: Kind) -> None:
    assert kind_of(raw) is kind


def test_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown test kind 'mandatory'"):
        kind_of("mandatory")


RAW = [
    {"id": "a", "name": "A", "kind": None, "browser_only": False, "suite": "s"},
    {"id": "b", "name": "B", "kind": "required", "browser_only": False, "suite": "s"},
    {"id": "c", "name": "C", "kind": "optimal", "browser_only": False, "suite": "s"},
    {"id": "d", "name": "D", "kind": "check", "browser_only": False, "suite": "s"},
    {"id": "e", "name": "E", "kind": None, "browser_only": True, "suite": "s"},
    {"id": "f", "name": "F", "kind": "optimal", "browser_only": False, "suite": "t"},
]
DEFS = definitions(RAW)


def test_browser_only_tests_are_left_out_and_check_tests_not_counted() -> None:
    assert list(DEFS) == ["a", "b", "c", "d", "f"]
    assert totals(DEFS) == Score(required=2, optional=2)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({}, Score(0, 0)),
        ({"a": True, "b": True, "c": True, "d": True, "e": True, "f": True}, Score(2, 2)),
        ({"a": True, "b": ["Assertion", "Response 2 comes from cache"], "c": True}, Score(1, 1)),
        ({"a": "true", "b": 1, "c": [True], "f": False}, Score(0, 0)),  # only `true` passes
        ({"d": True, "e": True}, Score(0, 0)),  # check and browser-only: not counted
    ],
)
def test_a_test_passes_when_its_result_is_exactly_true(
    results: dict[str, object], expected: Score
) -> None:
    assert score(results, DEFS) == expected


def test_failing_lists_each_kind_in_the_suites_order_with_its_result() -> None:
    results: dict[str, object] = {"a": ["Setup", "PUT config resulted in 502"], "c": True}
    assert [(d.id, r) for d, r in failing(results, DEFS, Kind.REQUIRED)] == [
        ("a", ["Setup", "PUT config resulted in 502"]),
        ("b", None),
    ]
    assert [d.id for d, _ in failing(results, DEFS, Kind.OPTIONAL)] == ["f"]


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (None, "not run"),
        (["Assertion", "Response 2 comes from cache"], "Assertion: Response 2 comes from cache"),
        (False, "false"),
    ],
)
def test_describe(result: object, text: str) -> None:
    assert describe(result) == text


ANSWERS = [
    Answer("GET", "/test/relayed", 503),
    Answer("GET", "/test/own", 200),
    Answer("GET", "/test/dropped", None),
    Answer("GET", "/test/cached", 500),
]


@pytest.mark.parametrize(
    ("served", "origin"),
    [
        (Served("GET", "/test/relayed", 503, "MISS"), Origin5xx.RELAYED),
        (Served("GET", "/test/cached", 500, "HIT"), Origin5xx.RELAYED),  # stored from the app
        (Served("GET", "/test/own", 502, "MISS"), Origin5xx.OWN),  # the app said 200
        (Served("GET", "/test/relayed", 502, "MISS"), Origin5xx.OWN),  # not the app's 503
        (Served("PUT", "/config/never-reached", 502, "BYPASS"), Origin5xx.OWN),
        (Served("GET", "/test/dropped", 502, "MISS"), Origin5xx.DROPPED),
        (Served("GET", "/test/dropped", 504, "MISS"), Origin5xx.DROPPED),
        (Served("GET", "/test/dropped", 500, "MISS"), Origin5xx.OWN),  # a hang-up is no 500
    ],
)
def test_who_a_5xx_came_from(served: Served, origin: Origin5xx) -> None:
    assert attribute_5xx(served, ANSWERS) is origin


def test_only_5xx_answers_are_attributed() -> None:
    served = [
        Served("GET", "/test/own", 200, "MISS"),
        Served("GET", "/test/own", 404, "MISS"),
        Served("GET", "/test/own", 502, "MISS"),
        Served("GET", "/test/relayed", 503, "HIT"),
    ]
    found = sidecache_5xx(served, ANSWERS)
    assert found[Origin5xx.OWN] == [served[2]]
    assert found[Origin5xx.RELAYED] == [served[3]]
    assert found[Origin5xx.DROPPED] == []


def test_the_access_log_is_read_from_sidecaches_stderr() -> None:
    text = "\n".join(
        [
            "2026-11-28 12:05:04,806 INFO proxy.server: config: listen    127.0.0.1:0",
            '{"time":"2026-11-28T12:05:05Z","client":"127.0.0.1","method":"PUT",'
            '"path":"/config/x","query":"","status":201,"cache":"BYPASS","route":"all",'
            '"bytes":2,"duration_ms":38.18,"upstream_ms":37.18}',
            "2026-11-28 12:05:38,362 INFO proxy.handler: upstream response broken for /test/y",
            '{"method":"GET","path":"/test/y","status":502,"cache":"MISS"}',
            '{"not": "an access line"}',
            "{truncated",
        ]
    )
    assert parse_access_log(text) == [
        Served("PUT", "/config/x", 201, "BYPASS"),
        Served("GET", "/test/y", 502, "MISS"),
    ]


def test_the_apps_answers_are_read_by_path() -> None:
    text = (
        '{"method":"GET","target":"/test/x?test=1","status":200}\n'
        '{"method":"GET","target":"/test/y","status":null}\n\n'
    )
    assert parse_answers(text) == [Answer("GET", "/test/x", 200), Answer("GET", "/test/y", None)]


@pytest.mark.parametrize(
    ("freshness_key", "ttl", "route"),
    [
        (True, None, {"name": "all", "match": "/{rest:path}", "freshness": "origin"}),
        (False, "5m", {"name": "all", "match": "/{rest:path}", "ttl": "5m"}),
        (False, None, {"name": "all", "match": "/{rest:path}"}),
    ],
)
def test_the_config_is_one_catch_all_route_on_loopback(
    freshness_key: bool, ttl: str | None, route: dict[str, str]
) -> None:
    config = yaml.safe_load(sidecache_config(4321, freshness_key, ttl))
    assert config == {
        "listen": "127.0.0.1:0",
        "upstream": {"url": "http://127.0.0.1:4321"},
        "control": {"listen": "127.0.0.1:0"},
        "log": {"access": "json"},
        "routes": [route],
    }


def test_the_table_puts_the_best_first_and_marks_ours() -> None:
    rows = [
        Row("nginx", Score(100, 57)),
        Row("sidecache", Score(99, 48), ours=True),
        Row("Squid", Score(141, 49)),
        Row("Varnish", Score(123, 44)),
        Row("ATS", Score(123, 57)),
    ]
    assert table(rows, Score(165, 95)).splitlines() == [
        "| cache | required | optional |",
        "|---|---|---|",
        "| Squid | 141/165 | 49/95 |",
        "| ATS | 123/165 | 57/95 |",
        "| Varnish | 123/165 | 44/95 |",
        "| nginx | 100/165 | 57/95 |",
        "| **sidecache** | 99/165 | 48/95 |",
    ]
