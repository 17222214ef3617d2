"""Freshness from the origin: what an app's response headers say about reusing
the response, read as a shared cache must (RFC 9111).

Owns the parsing of ``Cache-Control`` (RFC 9111 section 5.2), of
``CDN-Cache-Control`` (RFC 9213: a Structured Field dictionary, RFC 8941), of
``Surrogate-Control`` (W3C Edge Architecture), of HTTP-dates (RFC 9110 section
5.6.7) and of ``Age``, and the arithmetic built on
them: the freshness lifetime (RFC 9111 section 4.2.1), the heuristic lifetime
(4.2.2) and the age a response already has when it arrives (4.2.3). Routes are
not known here: ``policy`` says which statuses may get a default lifetime and
what that default is. Times are wall-clock seconds (HTTP-dates are), passed in;
results are frozen values. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import calendar
import enum
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

# RFC 9111 section 1.2.2: a delta-seconds larger than this is read as this.
MAX_DELTA = 2147483648
# RFC 9111 section 4.2.2: "no more than some fraction of the interval since"
# Last-Modified; 10 % is the figure it cites. Capped at a day, as Squid's
# default refresh_pattern max and Firefox do, so that a file untouched for years
# is not held for months without a word from the app.
HEURISTIC_FRACTION = 0.1
HEURISTIC_CAP = 86400.0
# RFC 9110 section 15.1: statuses a cache may reuse with a heuristic lifetime
# (and, here, with the route's default one) when the app gives no explicit one.
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# The final statuses RFC 9110 defines (section 15; 306 is unused): their caching
# rules are the general ones, which sidecache implements. A response that says
# ``must-understand`` is stored only with one of these (RFC 9111 section 5.2.2.3).
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 206}
    | {300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)
# The device name ``Surrogate-Control`` directives may be targeted at
# (``max-age=60;sidecache``), announced to the app in ``Surrogate-Capability``.
SURROGATE_DEVICE = "sidecache"

Headers = Sequence[tuple[str, str]]


def _all(headers: Headers, name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name]


# -- Cache-Control -------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def split_list(value: str, sep: str = ",") -> list[str]:
    """The members of a list field value (RFC 9110 section 5.6.1), split on ``sep``
    outside quoted strings, each stripped of surrounding whitespace; empty members
    are dropped, as recipients must."""
    members: list[str] = []
    start = 0
    quoted = escaped = False
    for i, c in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            members.append(value[start:i])
            start = i + 1
    members.append(value[start:])
    return [m for m in (m.strip(" \t") for m in members) if m]


def _unquote(value: str) -> str | None:
    """The content of a quoted-string, or None if ``value`` is not exactly one."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return None
    out: list[str] = []
    escaped = False
    for c in value[1:-1]:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            return None
        else:
            out.append(c)
    return None if escaped else "".join(out)


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """``Cache-Control`` field lines as directive name (lower-cased) -> argument
    (None when it has none). The first occurrence of a name counts (RFC 9111
    section 4.2.1 allows the first, or calling the response stale). A member whose
    name is not a token (``max-age =5``) is ignored; an argument that is not a token
    or a quoted string is kept as it is, for the directive to find it invalid."""
    directives: dict[str, str | None] = {}
    for value in values:
        for member in split_list(value):
            name, sep, arg = member.partition("=")
            if not _TOKEN.fullmatch(name):
                continue
            key = name.lower()
            if key in directives:
                continue
            if not sep:
                directives[key] = None
            else:
                unquoted = _unquote(arg)
                directives[key] = arg if unquoted is None else unquoted
    return directives


def parse_delta(arg: str | None) -> float | None:
    """delta-seconds (RFC 9111 section 1.2.2): digits only, capped at ``MAX_DELTA``;
    None if ``arg`` is anything else (missing, signed, decimal, quoted oddly)."""
    if arg is None or not arg.isascii() or not arg.isdigit():
        return None
    return float(min(int(arg), MAX_DELTA))


# -- CDN-Cache-Control: a Structured Field dictionary (RFC 8941) --------------------


class _Token(str):
    """An SF token, told apart from an SF string."""


SFItem = bool | int | float | str | bytes | tuple[object, ...]

_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_NUMBER = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,3})?")
_SF_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")


class _SFError(ValueError):
    pass


class _SFReader:
    """RFC 8941 section 4.2: a strict parser of the parts a dictionary needs."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> str:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise _SFError(self.pos)
        self.pos = m.end()
        return m.group(0)

    def dictionary(self) -> dict[str, SFItem]:
        out: dict[str, SFItem] = {}
        self.skip(" ")
        while self.peek():
            key = self.match(_SF_KEY)
            value: SFItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.member()
            else:
                self.parameters()
            out[key] = value  # a key given twice: the last one counts (RFC 8941)
            self.skip(" \t")
            if not self.peek():
                break
            if self.peek() != ",":
                raise _SFError(self.pos)
            self.pos += 1
            self.skip(" \t")
            if not self.peek():
                raise _SFError(self.pos)  # a trailing comma
        return out

    def member(self) -> SFItem:
        if self.peek() == "(":
            self.pos += 1
            items: list[object] = []
            while True:
                self.skip(" ")
                if self.peek() == ")":
                    self.pos += 1
                    break
                items.append(self.bare())
                self.parameters()
                if self.peek() not in (" ", ")"):
                    raise _SFError(self.pos)
            self.parameters()
            return tuple(items)
        item = self.bare()
        self.parameters()
        return item

    def parameters(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            self.match(_SF_KEY)
            if self.peek() == "=":
                self.pos += 1
                self.bare()

    def bare(self) -> SFItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == "?":
            flag = self.text[self.pos : self.pos + 2]
            if flag not in ("?0", "?1"):
                raise _SFError(self.pos)
            self.pos += 2
            return flag == "?1"
        if c == ":":
            return self.match(_SF_BYTES).encode("ascii")
        if c == "-" or c.isdigit():
            number = self.match(_SF_NUMBER)
            return float(number) if "." in number else int(number)
        return _Token(self.match(_SF_TOKEN))

    def string(self) -> str:
        out: list[str] = []
        self.pos += 1
        while True:
            c = self.peek()
            if not c:
                raise _SFError(self.pos)
            self.pos += 1
            if c == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise _SFError(self.pos)
                out.append(escaped)
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise _SFError(self.pos)
            else:
                out.append(c)


def parse_sf_dictionary(values: Sequence[str]) -> dict[str, SFItem] | None:
    """The field lines of a Structured Field dictionary, combined, or None when
    they are empty or do not parse (RFC 8941 section 4.2: the field is ignored)."""
    text = ", ".join(values).strip(" ")
    if not text:
        return None
    try:
        return _SFReader(text).dictionary()
    except _SFError:
        return None


# -- directives ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Directives:
    """The response directives a shared cache obeys."""

    no_store: bool = False
    # Also with field names (``no-cache="Set-Cookie"``): read as plain no-cache,
    # the stricter meaning. Likewise ``private="..."`` is plain private.
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    # RFC 9111 section 5.2.2.3: store only with a status in ``UNDERSTOOD_STATUSES``,
    # and then ``no-store`` is ignored (``policy.store_refusal``).
    must_understand: bool = False
    # None: absent. 0 when present but invalid: RFC 9111 section 4.2.1 encourages
    # caches to consider a response with invalid freshness information stale.
    max_age: float | None = None
    s_maxage: float | None = None
    # RFC 5861; 0 when absent or invalid (an invalid window allows nothing).
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    # From ``CDN-Cache-Control`` (RFC 9213) or ``Surrogate-Control``:
    # ``Cache-Control`` and ``Expires`` are then ignored.
    targeted: bool = False

    @property
    def no_stale(self) -> bool:
        """May the response never be served stale, only after revalidation? RFC 9111:
        must-revalidate (5.2.2.2), proxy-revalidate (5.2.2.8), s-maxage (5.2.2.10,
        which implies proxy-revalidate) and no-cache (5.2.2.4, stale from the start)."""
        return (
            self.must_revalidate
            or self.proxy_revalidate
            or self.s_maxage is not None
            or self.no_cache
        )

    @property
    def shareable_with_credentials(self) -> bool:
        """RFC 9111 section 3.5: a response to a request with ``Authorization`` may be
        stored by a shared cache only if it says one of these."""
        return self.public or self.must_revalidate or self.s_maxage is not None


def _window(arg: str | None) -> float:
    return parse_delta(arg) or 0.0


def _explicit(arg: str | None) -> float:
    delta = parse_delta(arg)
    return 0.0 if delta is None else delta


def from_cache_control(values: Iterable[str]) -> Directives:
    cc = parse_cache_control(values)
    return Directives(
        no_store="no-store" in cc,
        no_cache="no-cache" in cc,
        private="private" in cc,
        public="public" in cc,
        must_revalidate="must-revalidate" in cc,
        proxy_revalidate="proxy-revalidate" in cc,
        must_understand="must-understand" in cc,
        max_age=_explicit(cc["max-age"]) if "max-age" in cc else None,
        s_maxage=_explicit(cc["s-maxage"]) if "s-maxage" in cc else None,
        stale_while_revalidate=_window(cc.get("stale-while-revalidate")),
        stale_if_error=_window(cc.get("stale-if-error")),
    )


_SF_FLAGS = (
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
)
_SF_DELTAS = ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error")


def from_cdn_cache_control(values: Sequence[str]) -> Directives | None:
    """``CDN-Cache-Control`` (RFC 9213) as directives, or None if it is absent,
    empty, not a valid dictionary, or gives a known directive a value of the wrong
    type (``max-age="60"``, ``max-age=-1``): then it is ignored as a whole, and
    ``Cache-Control`` applies (RFC 9213 section 2.1)."""
    sf = parse_sf_dictionary(values)
    if sf is None:
        return None
    deltas: dict[str, float] = {}
    for name in _SF_DELTAS:
        if name in sf:
            value = sf[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return None
            deltas[name] = float(min(value, MAX_DELTA))
    # A flag with any value but ?0 is set: for no-cache and private the stricter
    # reading again (a list of field names is read as the plain directive).
    flags = {name: name in sf and sf[name] is not False for name in _SF_FLAGS}
    return Directives(
        no_store=flags["no-store"],
        no_cache=flags["no-cache"],
        private=flags["private"],
        public=flags["public"],
        must_revalidate=flags["must-revalidate"],
        proxy_revalidate=flags["proxy-revalidate"],
        must_understand=flags["must-understand"],
        max_age=deltas.get("max-age"),
        s_maxage=deltas.get("s-maxage"),
        stale_while_revalidate=deltas.get("stale-while-revalidate", 0.0),
        stale_if_error=deltas.get("stale-if-error", 0.0),
        targeted=True,
    )


def from_surrogate_control(
    values: Iterable[str], device: str = SURROGATE_DEVICE
) -> Directives | None:
    """``Surrogate-Control`` (W3C Edge Architecture, section 3) as directives, or None
    when it says nothing to ``device``.

    Read are ``max-age`` and ``no-store``, untargeted or targeted at ``device``
    (``max-age=60;sidecache``); one targeted at it replaces an untargeted one of the
    same name. Ignored: directives targeted at another device, unknown ones
    (``content``, ``no-store-remote``, extensions), and a ``max-age`` that is not
    delta-seconds (``max-age =60``, ``max-age= 60``, ``max-age=-1``). Names and
    device tokens are case-insensitive; the stale part of ``max-age=60+30`` is
    dropped (no stale window is given); values above ``MAX_DELTA`` are capped.
    The first occurrence of a directive counts, as in ``Cache-Control``."""
    untargeted: dict[str, float | None] = {}
    targeted: dict[str, float | None] = {}
    for value in values:
        for member in split_list(value):
            control, *targets = split_list(member, ";")
            if len(targets) > 1:
                continue
            if targets and targets[0].lower() != device:
                continue
            name, sep, arg = control.partition("=")
            key = name.lower()
            found = targeted if targets else untargeted
            if not _TOKEN.fullmatch(name) or key in found:
                continue
            if key == "no-store" and not sep:
                found[key] = None
            elif key == "max-age" and sep:
                unquoted = _unquote(arg)
                delta = parse_delta((arg if unquoted is None else unquoted).partition("+")[0])
                if delta is not None:
                    found[key] = delta
    chosen = {**untargeted, **targeted}
    if not chosen:
        return None
    return Directives(no_store="no-store" in chosen, max_age=chosen.get("max-age"), targeted=True)


def directives(headers: Headers) -> Directives:
    """The directives that apply: ``CDN-Cache-Control`` when it is present and
    valid (RFC 9213 section 2.1: it then replaces ``Cache-Control``), else
    ``Surrogate-Control`` when it gives sidecache a ``max-age`` or ``no-store``
    (read the same way: ``Cache-Control`` and ``Expires`` are then ignored, as
    Fastly and Varnish set-ups use it to give the edge its own lifetime), else
    ``Cache-Control``."""
    cdn = _all(headers, "cdn-cache-control")
    if cdn:
        targeted = from_cdn_cache_control(cdn)
        if targeted is not None:
            return targeted
    surrogate = _all(headers, "surrogate-control")
    if surrogate:
        targeted = from_surrogate_control(surrogate)
        if targeted is not None:
            return targeted
    return from_cache_control(_all(headers, "cache-control"))


# -- HTTP-dates and Age --------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 section 5.6.7, matched case-insensitively (names in the wrong case are
# read, as the conformance suite's optimal tests expect), nothing else tolerated.
_IMF_FIXDATE = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} gmt",
    re.IGNORECASE,
)
_RFC850 = re.compile(
    rf"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), "
    rf"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} gmt",
    re.IGNORECASE,
)
_ASCTIME = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun) {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})",
    re.IGNORECASE,
)


def parse_http_date(value: str, now: float | None = None) -> float | None:
    """Seconds since the epoch of an HTTP-date (IMF-fixdate, or the obsolete RFC 850
    and asctime forms), or None if ``value`` is not exactly one. An RFC 850 year
    more than 50 years after ``now`` is read a century earlier (RFC 9110 section
    5.6.7); without ``now``, 70-99 are read as 19xx and 00-69 as 20xx."""
    text = value.strip(" \t")
    if m := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hh, mm, ss = m.groups()
        return _timestamp(int(year), month, int(day), int(hh), int(mm), int(ss))
    if m := _RFC850.fullmatch(text):
        day, month, yy, hh, mm, ss = m.groups()
        return _timestamp(_full_year(int(yy), now), month, int(day), int(hh), int(mm), int(ss))
    if m := _ASCTIME.fullmatch(text):
        month, day, hh, mm, ss, year = m.groups()
        return _timestamp(int(year), month, int(day.strip()), int(hh), int(mm), int(ss))
    return None


def _full_year(yy: int, now: float | None) -> int:
    if now is None:
        return 1900 + yy if yy >= 70 else 2000 + yy
    this_year = int(now // 31556952) + 1970  # the mean Gregorian year is close enough
    year = this_year - this_year % 100 + yy
    return year - 100 if year > this_year + 50 else year


def _timestamp(year: int, month: str, day: int, hh: int, mm: int, ss: int) -> float | None:
    number = _MONTHS.index(month.lower()) + 1
    if year < 1 or not 1 <= day <= calendar.monthrange(year, number)[1]:
        return None
    if hh > 23 or mm > 59 or ss > 60:  # 60: a leap second
        return None
    return float(calendar.timegm((year, number, day, hh, mm, ss)))


def parse_age(values: Sequence[str]) -> float | None:
    """The ``Age`` of a response, capped at ``MAX_DELTA``: 0 without one, None when
    it is invalid. Valid is exactly one field line of one non-negative integer
    (RFC 9111 section 5.1: digits only); anything else (``abc``, ``-7200``,
    ``7200.0``, a list such as ``0, 0`` or ``0,7200``, two lines, ``7200;foo=bar``)
    is invalid, and section 4.2.1 lets a cache consider such a response stale:
    erring that way costs a conditional request, never a wrong answer."""
    if not values:
        return 0.0
    if len(values) > 1:
        return None
    return parse_delta(values[0].strip(" \t"))


# -- the assessment -------------------------------------------------------------------


class Basis(enum.Enum):
    """Where a response's freshness lifetime comes from."""

    S_MAXAGE = "s-maxage"
    MAX_AGE = "max-age"
    EXPIRES = "expires"
    HEURISTIC = "heuristic"  # a fraction of the time since Last-Modified
    DEFAULT = "default"  # the route's ttl: the app gave no lifetime
    NONE = "none"  # reusable by status, but no lifetime at all: stale on arrival
    # Neither explicit freshness nor a status (or ``public``) that allows reuse
    # without it: not cacheable (RFC 9111 section 3).
    UNCACHEABLE = "uncacheable"


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the app's headers say about reusing one response, when it arrived."""

    directives: Directives
    basis: Basis
    lifetime: float  # the freshness lifetime, seconds
    # RFC 9111 section 4.2.3, corrected_initial_age: how old the response already is.
    age: float
    # How long it stays fresh from its arrival: lifetime minus age, 0 with
    # no-cache; a route default (``Basis.DEFAULT``) counts from arrival, as a
    # route's ttl always has.
    fresh_for: float


def lifetime(
    d: Directives, headers: Headers, *, date: float | None, now: float | None
) -> tuple[Basis, float] | None:
    """The explicit freshness lifetime (RFC 9111 section 4.2.1, shared cache), or
    None if the app gave none. ``date`` is the response's ``Date`` (or when it was
    received, without one): ``Expires`` counts from it."""
    if d.s_maxage is not None:
        return Basis.S_MAXAGE, d.s_maxage
    if d.max_age is not None:
        return Basis.MAX_AGE, d.max_age
    if d.targeted:
        return None  # RFC 9213 section 2.1: Expires is ignored as well
    expires = _all(headers, "expires")
    if not expires:
        return None
    # Two lines, or anything but one HTTP-date (``Expires: 0``), mean already
    # expired (RFC 9111 section 5.3).
    at = parse_http_date(expires[0], now) if len(expires) == 1 else None
    if at is None or date is None:
        return Basis.EXPIRES, 0.0
    return Basis.EXPIRES, max(0.0, at - date)


def heuristic(headers: Headers, *, date: float | None, now: float | None) -> float | None:
    """RFC 9111 section 4.2.2: ``HEURISTIC_FRACTION`` of the time from
    ``Last-Modified`` to ``date``, at most ``HEURISTIC_CAP``; None without a usable
    ``Last-Modified``."""
    values = _all(headers, "last-modified")
    if len(values) != 1 or date is None:
        return None
    modified = parse_http_date(values[0], now)
    if modified is None:
        return None
    return min(HEURISTIC_CAP, max(0.0, date - modified) * HEURISTIC_FRACTION)


def assess(
    status: int,
    headers: Headers,
    *,
    response_time: float | None,
    response_delay: float = 0.0,
    default_ttl: float | None = None,
    implicit: Container[int] = HEURISTICALLY_CACHEABLE,
) -> Assessment:
    """Read a response's freshness as a shared cache.

    ``response_time`` is the wall-clock instant the response was received, and
    ``response_delay`` the time from its request being sent until then (RFC 9111
    section 4.2.3); without the first, the response's own ``Date`` stands for it
    (so no apparent age is counted). ``default_ttl`` is the lifetime
    given when the app gives none (a route's ``ttl``): without it, the heuristic
    applies when there is a ``Last-Modified``. Either only to statuses in
    ``implicit`` or to responses marked ``public``.
    """
    d = directives(headers)
    dates = _all(headers, "date")
    date = parse_http_date(dates[0], response_time) if len(dates) == 1 else None
    received = response_time if response_time is not None else date
    date_value = date if date is not None else received
    # RFC 9111 section 4.2.3.
    apparent_age = max(0.0, received - date) if received is not None and date is not None else 0.0
    declared = parse_age(_all(headers, "age"))
    age = max(apparent_age, (declared or 0.0) + max(0.0, response_delay))

    found = lifetime(d, headers, date=date_value, now=received)
    if found is not None:
        basis, seconds = found
        fresh_for = max(0.0, seconds - age)
    elif status not in implicit and not d.public:
        basis, seconds, fresh_for = Basis.UNCACHEABLE, 0.0, 0.0
    elif default_ttl is not None:
        basis, seconds, fresh_for = Basis.DEFAULT, default_ttl, default_ttl
    elif (guess := heuristic(headers, date=date_value, now=received)) is not None:
        basis, seconds, fresh_for = Basis.HEURISTIC, guess, max(0.0, guess - age)
    else:
        basis, seconds, fresh_for = Basis.NONE, 0.0, 0.0
    if d.no_cache:
        fresh_for = 0.0  # stored, but revalidated before every reuse (5.2.2.4)
    elif declared is None and basis is not Basis.DEFAULT:
        # An invalid Age: stale on arrival (RFC 9111 section 4.2.1). A route
        # default counts from arrival and never reads the age.
        fresh_for = 0.0
    return Assessment(d, basis, seconds, age, fresh_for)
