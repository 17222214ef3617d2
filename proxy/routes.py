"""Route templates and the compiled route table.

Owns turning ``match`` templates (``/api/photo/{id}``, ``/files/{name:[a-z]+\\.jpg}``,
``/static/{rest:path}``) into anchored regular expressions at load time, finding
the first route that matches a normalised path, and telling which routes an
earlier one shadows. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

# The default for ``{name}``: one path segment of RFC 3986 pchar characters, minus
# ``;`` (path parameters) and without ``/``. Percent-encoded octets are allowed;
# keys.normalise_path has already refused the ambiguous ones (%2F, %5C, %00, ...).
SEGMENT = r"[A-Za-z0-9\-._~!$&'()*+,=:@%]+"

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[0-9,]*\})+))?\}")
# ``{name:path}``: the rest of the path, '/' included (a trailing '/' kept), possibly
# empty as Starlette's ``path`` convertor: ``/{rest:path}`` also matches ``/``.
REST = "path"
_REST_PATTERN = f"(?:{SEGMENT}(?:/{SEGMENT})*/?)?"


class TemplateError(ValueError):
    """A ``match`` template that cannot be compiled; the message says why."""


def compile_template(template: str) -> re.Pattern[str]:
    """Compile a route template into an anchored pattern, or raise TemplateError."""
    if not template.startswith("/"):
        raise TemplateError(f"{template!r} must start with '/'")
    parts: list[str] = []
    names: set[str] = set()
    pos = 0
    for m in _PARAM.finditer(template):
        literal = template[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise TemplateError(f"{template!r} has an unbalanced or malformed '{{...}}'")
        parts.append(re.escape(literal))
        name, regex = m.group(1), m.group(2)
        if name in names:
            raise TemplateError(f"{template!r} uses the parameter {{{name}}} twice")
        names.add(name)
        if regex is None:
            parts.append(f"(?P<{name}>{SEGMENT})")
        elif regex == REST:
            if m.end() != len(template):
                raise TemplateError(
                    f"{template!r}: {{{name}:path}} is the rest of the path: "
                    "it must end the template"
                )
            parts.append(f"(?P<{name}>{_REST_PATTERN})")
        else:
            if _slash_outside_class(regex):
                raise TemplateError(
                    f"{template!r}: {{{name}:{regex}}} can never match: a parameter is one path "
                    f"segment, which never contains '/' (expected a regular expression without "
                    f"'/', or {{{name}:path}} for the rest of the path)"
                )
            try:
                compiled = re.compile(regex)
            except re.error as exc:
                raise TemplateError(
                    f"{template!r}: {{{name}:{regex}}} is not a valid regular expression ({exc})"
                ) from None
            if compiled.groupindex:
                raise TemplateError(f"{template!r}: {{{name}:...}} must not define named groups")
            # A constrained parameter still never crosses a segment boundary.
            parts.append(f"(?P<{name}>(?:{regex}))")
        pos = m.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail:
        raise TemplateError(f"{template!r} has an unbalanced or malformed '{{...}}'")
    parts.append(re.escape(tail))
    return re.compile("".join(parts))


# One escape sequence: the numeric forms of a single character, else a
# backslash and the one character after it.
_ESCAPE = re.compile(
    r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[0-7]{3}|0[0-7]{0,2}|.)",
    re.DOTALL,
)


def _denotes_slash(escape: str) -> bool:
    """Is ``escape`` the character '/' (``\\/``, ``\\x2f``, ``\\u002f``, ``\\057``...)?"""
    if len(escape) == 2 and escape[1].isalpha():
        return False  # \\d, \\W, \\b...: a class or an anchor, not one character
    try:
        return re.fullmatch(escape, "/") is not None
    except re.error:
        return False  # not valid: compile_template says so


def _slash_outside_class(regex: str) -> bool:
    """Does ``regex`` require a literal '/' somewhere (outside a ``[...]`` class)?"""
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            escape = _ESCAPE.match(regex, i)
            if escape is not None and _denotes_slash(escape.group()):
                return True
            i = escape.end() if escape is not None else i + 2
        elif c == "[":
            i += 1
            if regex[i : i + 1] == "^":
                i += 1
            if regex[i : i + 1] == "]":
                i += 1  # a ']' first in a class is a literal
            while i < len(regex) and regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
            i += 1
        elif c == "/":
            return True
        else:
            i += 1
    return False


def _rest_params(template: str) -> frozenset[str]:
    return frozenset(m.group(1) for m in _PARAM.finditer(template) if m.group(2) == REST)


class RouteLike(Protocol):
    """What the table needs of a configured route (``config.RouteConfig``)."""

    @property
    def name(self) -> str: ...

    @property
    def match(self) -> str: ...


R = TypeVar("R", bound=RouteLike)


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[R]):
    route: R
    params: dict[str, str]


class RouteTable(Generic[R]):
    """Routes in configuration order; the first whose template matches wins."""

    __slots__ = ("_compiled",)

    def __init__(self, routes: Sequence[R]) -> None:
        self._compiled = tuple(
            (compile_template(r.match), _rest_params(r.match), r) for r in routes
        )

    def match(self, path: str) -> RouteMatch[R] | None:
        for pattern, rest, route in self._compiled:
            m = pattern.fullmatch(path)
            if m is not None and all(
                "/" not in v for k, v in m.groupdict().items() if k not in rest
            ):
                return RouteMatch(route, m.groupdict())
        return None

    def __len__(self) -> int:
        return len(self._compiled)


# -- shadowed routes ------------------------------------------------------------------

# A template as segments of pieces: a literal, or (kind, regex) for a parameter,
# kind "seg" ({name}), "re" ({name:REGEX}) or "rest" ({name:path}).
_Piece = str | tuple[str, str | None]
_Segment = tuple[_Piece, ...]
_ONE_SEGMENT: _Piece = ("seg", None)
_THE_REST: _Piece = ("rest", None)
# Parameter regexes that match every segment, spelled the usual ways. A segment
# never holds '/' or a newline (RouteTable.match, keys.normalise_path), so ``.``
# and ``[^/]`` both match any of its characters; the ``*`` forms also match the
# empty last segment of a path that ends in '/'.
_ANY_SEGMENT: frozenset[_Piece] = frozenset(
    ("re", r) for r in (".+", ".+?", "[^/]+", "[^/]+?", r"[^\/]+", r"[^\/]+?")
)
_ANY_SEGMENT_OR_EMPTY: frozenset[_Piece] = frozenset(
    ("re", r) for r in (".*", ".*?", "[^/]*", "[^/]*?", r"[^\/]*", r"[^\/]*?")
)


def _segments(template: str) -> list[_Segment]:
    segments: list[list[_Piece]] = [[]]

    def literal(text: str) -> None:
        first, *more = text.split("/")
        if first:
            segments[-1].append(first)
        for piece in more:
            segments.append([piece] if piece else [])

    pos = 0
    for m in _PARAM.finditer(template):
        literal(template[pos : m.start()])
        regex = m.group(2)
        piece = _ONE_SEGMENT if regex is None else _THE_REST if regex == REST else ("re", regex)
        segments[-1].append(piece)
        pos = m.end()
    literal(template[pos:])
    return [tuple(s) for s in segments[1:]]


def _can_be_empty(segment: _Segment) -> bool:
    return all(
        not isinstance(p, str) and p[0] == "re" and re.fullmatch(p[1] or "", "") is not None
        for p in segment
    )


def _segment_covers(a: _Segment, b: _Segment) -> bool:
    """Does segment ``a`` match every string segment ``b`` matches? False when unsure.

    Paths are normalised (keys.normalise_path): a segment is made of SEGMENT
    characters, and only the last one may be empty.
    """
    if a == b:
        return True
    if a == (_ONE_SEGMENT,) or (len(a) == 1 and a[0] in _ANY_SEGMENT):
        return _THE_REST not in b and not _can_be_empty(b)
    if len(a) == 1 and a[0] in _ANY_SEGMENT_OR_EMPTY:
        return _THE_REST not in b
    if (
        len(a) == 1
        and not isinstance(a[0], str)
        and a[0][0] == "re"
        and all(isinstance(p, str) for p in b)
    ):
        return re.fullmatch(a[0][1] or "", "".join(map(str, b))) is not None
    return False


def shadows(earlier: str, later: str) -> bool:
    """Is every path template ``later`` matches matched by ``earlier`` too?

    Decided segment by segment and conservatively: True only when certain (an
    identical template, ``{x}``, a catch-all ``{x:.+}`` or ``{x:path}`` over
    anything, a regex over a literal it matches); two other regular expressions
    are never compared.
    """
    a, b = _segments(earlier), _segments(later)
    for i, segment in enumerate(a):
        if segment == (_THE_REST,):
            return len(b) > i  # the rest matches whatever follows, nothing included
        if i >= len(b) or not _segment_covers(segment, b[i]):
            return False
    return len(a) == len(b)


def shadowed(routes: Sequence[RouteLike]) -> list[tuple[int, int]]:
    """(earlier, later) index pairs: ``later`` never applies, ``earlier`` always matches first."""
    found: list[tuple[int, int]] = []
    for j, later in enumerate(routes):
        for i in range(j):
            if shadows(routes[i].match, later.match):
                found.append((i, j))
                break
    return found
