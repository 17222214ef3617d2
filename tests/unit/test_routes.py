"""Route templates and the route table (proxy/routes.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.routes import RouteTable, TemplateError, compile_template


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
