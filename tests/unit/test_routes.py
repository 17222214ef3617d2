"""Route templates and the route table (proxy/routes.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.routes import RouteTable, TemplateError, compile_template, shadowed, shadows


@dataclass(frozen=True)
class R:
    name: str
    match: str


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/api/photo/{id}", "/api/photo/12", {"id": "12"}),
        ("/api/photo/{id}", "/api/photo/abc-1.jpg", {"id": "abc-1.jpg"}),
        ("/api/photo/{id}", "/api/photo/12/x", None),
        ("/api/photo/{id}", "/api/photo/", None),
        ("/api/photo/{id}", "/api/photo", None),
        ("/api/photo/{id:[0-9]+}", "/api/photo/12", {"id": "12"}),
        ("/api/photo/{id:[0-9]+}", "/api/photo/12a", None),
        ("/e/{e}/p/{p}", "/e/1/p/2", {"e": "1", "p": "2"}),
        ("/f/{name:.+}", "/f/a/b", None),  # a constrained parameter never spans segments
        ("/f/{n:[0-9]{2,3}}", "/f/123", {"n": "123"}),
        ("/static.css", "/staticXcss", None),  # literals are escaped
        ("/exact", "/exact", {}),
        ("/exact", "/exact/", None),
        ("/f/{rest:path}", "/f/a", {"rest": "a"}),
        ("/f/{rest:path}", "/f/a/b.jpg", {"rest": "a/b.jpg"}),
        ("/f/{rest:path}", "/f/a/b/", {"rest": "a/b/"}),
        ("/f/{rest:path}", "/f/", {"rest": ""}),  # the rest may be empty, as Starlette's
        ("/f/{rest:path}", "/f", None),
        ("/f/{rest:path}", "/fx", None),
        ("/{rest:path}", "/", {"rest": ""}),
        ("/{rest:path}", "/a", {"rest": "a"}),
        ("/{rest:path}", "/a/", {"rest": "a/"}),
        ("/{rest:path}", "/test/0f3c-9a/x.txt", {"rest": "test/0f3c-9a/x.txt"}),
        ("/{rest:path}", "/a/b/%41~!$&'()*+,=:@", {"rest": "a/b/%41~!$&'()*+,=:@"}),
        ("/{rest:path}", "/a/b;c=1", None),  # ';' never in a segment (keys: ambiguous)
        ("/f/{d}/{rest:path}", "/f/1/x/y", {"d": "1", "rest": "x/y"}),
        ("/f/{n:[^/]+}", "/f/a", {"n": "a"}),  # '/' inside a class is fine
    ],
)
def test_template_matching(template: str, path: str, params: dict[str, str] | None) -> None:
    table = RouteTable([R("r", template)])
    m = table.match(path)
    if params is None:
        assert m is None
    else:
        assert m is not None and m.params == params


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("api/photo", "must start with '/'"),
        ("/a/{id}/{id}", "uses the parameter {id} twice"),
        ("/a/{id", "unbalanced or malformed"),
        ("/a/id}", "unbalanced or malformed"),
        ("/a/{1x}", "unbalanced or malformed"),
        ("/a/{id:[0-9}", "not a valid regular expression"),
        ("/a/{id:(}", "not a valid regular expression"),
        ("/a/{id:(?P<x>1)}", "must not define named groups"),
        ("/a/{rest:path}/b", "{rest:path} is the rest of the path: it must end the template"),
    ],
)
def test_bad_templates_are_rejected(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        compile_template(template)


def test_first_matching_route_wins() -> None:
    table = RouteTable([R("special", "/api/photo/{id:0}"), R("photo", "/api/photo/{id}")])
    first = table.match("/api/photo/0")
    other = table.match("/api/photo/7")
    assert first is not None and first.route.name == "special"
    assert other is not None and other.route.name == "photo"
    assert table.match("/nope") is None
    assert len(table) == 2


@pytest.mark.parametrize(
    "regex",
    [
        "a/b",
        "a|b/c",
        r"x\/y",
        "[a-z]+/[0-9]+",
        "(?:/)?",
        "[]]/",
        r"\x2f",
        r"a\x2Fb",
        r"\u002f",
        r"\U0000002f",
        r"\057",
    ],
)
def test_a_parameter_regex_that_needs_a_slash_is_refused(regex: str) -> None:
    template = f"/s/{{p:{regex}}}"
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert str(info.value) == (
        f"{template!r}: {{p:{regex}}} can never match: a parameter is one path segment, "
        "which never contains '/' (expected a regular expression without '/', "
        "or {p:path} for the rest of the path)"
    )


@pytest.mark.parametrize(
    "regex", ["[^/]+", "[/a]+", r"[\]/]+", r"a\.b", ".+", r"\\x2f", r"\x2e", r"\W+", r"\0"]
)
def test_a_slash_inside_a_character_class_is_allowed(regex: str) -> None:
    compile_template(f"/s/{{p:{regex}}}")


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        ("/api/{x:path}", "/api/photo/{id}", True),
        ("/api/photo/{id}", "/api/photo/{n}", True),  # identical but for the name
        ("/api/photo/{id}", "/api/photo/{id}", True),
        ("/api/photo/{id}", "/api/photo/{n:[0-9]+}", True),
        ("/api/photo/{id}", "/api/photo/12", True),
        ("/api/photo/{id:[0-9]+}", "/api/photo/12", True),
        ("/a/{x}/b", "/a/1/b", True),
        ("/a/{x}.jpg", "/a/{y}.jpg", True),
        ("/a/{x:.*}", "/a/", True),
        ("/api/{x:.+}", "/api/{y}", True),
        ("/api/{x:.+?}", "/api/{y}", True),
        ("/api/{x:[^/]+}", "/api/{y}", True),
        ("/api/{x:.*}", "/api/{y}", True),
        ("/api/{x:[^/]*}", "/api/{y}", True),
        ("/api/{x:.+}", "/api/{y:[0-9]+}", True),
        ("/api/{x:.+}", "/api/{y}.jpg", True),
        ("/api/{x:.+}/b", "/api/{y}/b", True),
        ("/api/{x:.*}", "/api/{y:[0-9]*}", True),  # both also match "/api/"
        ("/api/{x:.+}", "/api/{y:[0-9]*}", False),  # only the later one matches "/api/"
        ("/api/{x:.+}", "/api/", False),
        ("/api/{x:.+}", "/api/{y:path}", False),
        ("/api/{x:.*}", "/api/{y:path}", False),
        ("/api/{x:.+}", "/api/{y}/b", False),
        ("/api/{x:[a-z].+}", "/api/{y}", False),  # not a recognised catch-all
        ("/api/photo/{id:[0-9]+}", "/api/photo/{n}", False),
        ("/api/photo/{id:[0-9]+}", "/api/photo/x", False),
        ("/api/photo/{id:[0-9]+}", "/api/photo/{n:[0-9]}", False),  # regexes are not compared
        ("/a/{x}", "/a/", False),
        ("/a/{x:path}", "/a/", True),  # an empty rest
        ("/a/{x:path}", "/a", False),
        ("/{x:path}", "/", True),
        ("/{x:path}", "/a/{y}/b", True),
        ("/{x:path}", "/{y:path}", True),
        ("/a/{x:path}", "/b/{y:path}", False),
        ("/a/{x}", "/a/{y:path}", False),
        ("/a/{x}", "/a/{y}/b", False),
        ("/a/{x}", "/a/{y:[0-9]*}", False),  # the later one also matches "/a/"
        ("/a", "/a/", False),
        ("/api/photo/{id}", "/api/{x:path}", False),
    ],
)
def test_shadowing(earlier: str, later: str, expected: bool) -> None:
    assert shadows(earlier, later) is expected


def test_shadowed_names_the_first_route_that_hides_each_later_one() -> None:
    routes = [
        R("thumb", "/api/photo/{id}/thumb"),
        R("api", "/api/{rest:path}"),
        R("photo", "/api/photo/{id}"),
        R("again", "/api/photo/{id}/thumb"),
        R("files", "/files/{name}"),
    ]
    assert shadowed(routes) == [(1, 2), (0, 3)]
