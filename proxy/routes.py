"""Route templates and the compiled route table.

Owns turning ``match`` templates (``/api/photo/{id}``, ``/files/{name:[a-z]+\\.jpg}``)
into anchored regular expressions at load time, and finding the first route that
matches a normalised path. Pure: imports neither aiohttp nor asyncio.
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
        else:
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
        self._compiled = tuple((compile_template(r.match), r) for r in routes)

    def match(self, path: str) -> RouteMatch[R] | None:
        for pattern, route in self._compiled:
            m = pattern.fullmatch(path)
            if m is not None and all("/" not in v for v in m.groupdict().values()):
                return RouteMatch(route, m.groupdict())
        return None

    def __len__(self) -> int:
        return len(self._compiled)
