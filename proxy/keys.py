"""Path normalisation, query selection, cache keys and credential digests.

Owns the rule set that decides which requests may share a cache entry. A path
that could be read two ways (encoded ``/`` or ``\\``, dot segments, ``;``
parameters, empty segments, control bytes, a raw ``#``) is *ambiguous*: it is
never looked up or stored, only passed through. Everything else is brought to
one canonical form (RFC 3986 section 6.2.2: unreserved characters decoded,
percent-encodings upper-cased), and that canonical form is also what is sent
upstream, so a key always names exactly the resource that was fetched.

Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

from proxy.freshness import split_list

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus ';' (path parameters are refused) and '%' (handled apart).
_PCHAR = _UNRESERVED | frozenset("!$&'()*+,=:@")
# Percent-encoded octets that would change how the path splits or ends.
_AMBIGUOUS_OCTETS = frozenset({0x2F, 0x5C, 0x7F} | set(range(0x20)))
_QUERY_CHARS = _PCHAR | frozenset("/?%;[]")


def normalise_path(raw_path: str) -> str | None:
    """Return the canonical form of a raw origin-form path, or None if it is ambiguous."""
    if not raw_path.startswith("/"):
        return None
    out: list[str] = []
    i = 0
    n = len(raw_path)
    while i < n:
        c = raw_path[i]
        if c == "%":
            pair = raw_path[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                return None
            octet = int(pair, 16)
            if octet in _AMBIGUOUS_OCTETS:
                return None
            decoded = chr(octet)
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        if c != "/" and c not in _PCHAR:
            return None  # ';', '#', '\\', spaces, controls, non-ASCII
        out.append(c)
        i += 1
    path = "".join(out)
    segments = path.split("/")
    # segments[0] is the empty string before the leading '/'; a trailing '/'
    # yields one final empty segment, which is legitimate ("/a/" is not "/a").
    for index, segment in enumerate(segments[1:], start=1):
        if segment in (".", ".."):
            return None
        if segment == "" and index != len(segments) - 1:
            return None  # '//' : some servers collapse it, others do not
    return path


def select_query(raw_query: str, mode: str | Sequence[str]) -> str | None:
    """The query string that joins the key and is forwarded upstream.

    ``all`` keeps the query exactly as sent; ``ignore`` drops it; a list keeps only
    the named parameters, ordered by name (repeated names keep their relative
    order), so that ``?b=2&a=1`` and ``?a=1&b=2`` share one entry. Dropped parameters are not
    forwarded either: a response is never stored under a key that omits an input
    the upstream saw. Returns None for a query that cannot be read one way only.
    """
    if any(c not in _QUERY_CHARS for c in raw_query):
        return None
    if mode == "all":
        return raw_query
    if mode == "ignore" or not raw_query:
        return ""
    wanted = frozenset(mode)
    named = [(unquote_plus(part.partition("=")[0]), part) for part in raw_query.split("&")]
    kept = sorted((pair for pair in named if pair[0] in wanted), key=lambda pair: pair[0])
    return "&".join(part for _, part in kept)


def credential_digest(authorization: Sequence[str], cookie: Sequence[str]) -> str:
    """A digest of the request's credentials: every ``Authorization`` and every
    ``Cookie`` field line, in the order received, since every one is forwarded (a
    second ``Cookie`` line is as much the app's input as the first). The raw values
    never enter a key.

    Counted and length-prefixed so that no two different inputs (more lines, split
    or joined values, one header's lines for the other's) feed the same bytes.
    """
    h = hashlib.blake2b(digest_size=20, person=b"sidecache.cred")
    for values in (authorization, cookie):
        h.update(b"%d;" % len(values))
        for value in values:
            data = value.encode("utf-8", "surrogateescape")
            h.update(b"%d:" % len(data))
            h.update(data)
    return h.hexdigest()


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The forwarding headers a trusted peer's values of are passed on and keyed:
# each can change the URLs, redirects and links the app renders.
FORWARDED_KEYED = ("x-forwarded-proto", "x-forwarded-host", "forwarded")


@lru_cache(maxsize=4096)
def trusted_peer(remote: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """Is the TCP peer ``remote`` in ``networks`` (``server.trusted_proxies``)?"""
    if not remote or not networks:
        return False
    try:
        address = ipaddress.ip_address(remote.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def forwarded_inputs(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A trusted peer's forwarding headers that join the key: only those it sent,
    every line of each joined (``Forwarded`` whole, its ``for=`` included)."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in FORWARDED_KEYED:
            found.setdefault(lname, []).append(value.strip())
    return tuple((n, ", ".join(found[n])) for n in FORWARDED_KEYED if n in found)


def build_key(
    route: str,
    host: str,
    target: str,
    vary: Sequence[tuple[str, str | None]] = (),
    credentials: str | None = None,
    forwarded: Sequence[tuple[str, str]] = (),
) -> str:
    """The cache key. ``target`` is the normalised path plus ``?query`` when non-empty.

    Fields are separated by a newline, which can appear in none of them (paths and
    queries with control bytes are refused, header values cannot hold one).
    """
    if not vary and credentials is None and not forwarded:
        return f"{route}\n{host}\n{target}"  # the usual key, without the list
    parts = [route, host, target]
    parts.extend(f"{name}:{value}" if value is not None else f"{name}!" for name, value in vary)
    if credentials is not None:
        parts.append("cred:" + credentials)
    parts.extend(f"fwd:{name}:{value}" for name, value in forwarded)
    return "\n".join(parts)


def variant_key(base: str, names: Sequence[str], values: Sequence[str | None]) -> str:
    """The key of one variant of ``base`` for an upstream ``Vary`` on ``names``
    (RFC 9111 section 4.1): the request's values of those headers join the key."""
    parts = [base, "vary"]
    parts.extend(
        f"{name}:{value}" if value is not None else f"{name}!"
        for name, value in zip(names, values, strict=True)
    )
    return "\n".join(parts)


_HOST_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_IPV6_CHARS = frozenset("0123456789abcdef:.")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise_host(raw: str, scheme: str = "http") -> str | None:
    """The canonical ``host[:port]`` of a ``Host`` value or a target's authority, or
    None if it is malformed (RFC 9110 section 7.2, RFC 3986 section 3.2.2).

    Lower-cased, a trailing dot removed, the scheme's default port removed, leading
    zeros of the port dropped: two values that name the same origin share a key.
    Only DNS names, IPv4 and bracketed IPv6 literals are accepted; userinfo,
    percent-encoding and anything else that could be read two ways is refused.
    """
    text = raw.strip(" \t").lower()
    if text.startswith("["):
        name, bracket, rest = text.partition("]")
        name += bracket
        if not bracket or len(name) < 4 or any(c not in _IPV6_CHARS for c in name[1:-1]):
            return None
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = text.partition(":")
        port = port_text if colon else None
        if name.endswith("."):
            name = name[:-1]
        if not name or len(name) > 253 or any(c not in _HOST_NAME_CHARS for c in name):
            return None
        if any(not label or len(label) > 63 for label in name.split(".")):
            return None
    if port:
        if not port.isdigit() or not port.isascii() or int(port) > 65535:
            return None
        port = str(int(port))
        if port != DEFAULT_PORTS.get(scheme):
            return f"{name}:{port}"
    return name


def host_name(host: str) -> str:
    """``host`` (as ``normalise_host`` returns it) without its port."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Is the normalised ``host`` named by ``allowed`` (``server.allowed_hosts``)?

    Entries are normalised host names without a port; ``*.example.com`` names every
    subdomain of ``example.com`` (not ``example.com`` itself) and ``*`` any host. An
    empty list allows every host. The port is not compared.
    """
    if not allowed:
        return True
    name = host_name(host)
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def split_absolute(target: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, path?query)`` of an absolute-form request target (RFC
    9112 section 3.2.2), or None if it is not an ``http``/``https`` URL with an
    authority. A fragment or userinfo makes it None too."""
    scheme, sep, rest = target.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS or "#" in rest:
        return None
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if not authority or "@" in authority:
        return None
    if not tail.startswith("/"):
        tail = "/" + tail  # 'http://host' and 'http://host?q' mean the path '/'
    return scheme, authority, tail


def request_host(raw_target: str, host_header: str | None) -> str | None:
    """The normalised host a request is for: the authority of an absolute-form target,
    which replaces ``Host`` (RFC 9112 section 3.2.2), else ``Host``. ``""`` when
    there is neither; None when the one that counts is malformed."""
    if raw_target.startswith("/"):
        return "" if host_header is None else normalise_host(host_header)
    parts = split_absolute(raw_target)
    if parts is None:
        return None
    return normalise_host(parts[1], parts[0])


# Escapes that some servers decode before they split a path or resolve its dots.
_STRUCTURAL_ESCAPES = (("%2f", "/"), ("%5c", "\\"), ("%2e", "."), ("%3b", ";"), ("%23", "#"))


def _decode_structural(path: str) -> str:
    lowered = path.lower()
    if not any(escape in lowered for escape, _ in _STRUCTURAL_ESCAPES):
        return path
    out: list[str] = []
    i = 0
    while i < len(path):
        replacement = next((c for e, c in _STRUCTURAL_ESCAPES if lowered.startswith(e, i)), None)
        if replacement is None:
            out.append(path[i])
            i += 1
        else:
            out.append(replacement)
            i += 3
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, for a path that starts with ``/``."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def loose_path(path: str) -> str:
    """The form under which purges find stored paths: ``path`` (as ``normalise_path``
    gives it) percent-decoded, case-folded, its trailing slashes removed.

    Many apps read ``/C/X``, ``/c/x/`` and ``/c/x`` as one resource (Express and
    Rails by default, Spring before 6, ASP.NET routes case-insensitively): a purge
    of any of them drops every stored path of the same loose form. Never a cache
    key: paths that differ are still stored and served apart.
    """
    loose = unquote(path, errors="surrogateescape").casefold().rstrip("/")
    return loose or "/"


def resolutions(raw_path: str) -> frozenset[str]:
    """Every canonical path (as ``normalise_path`` gives it) that an app may resolve
    the raw origin-form path ``raw_path`` to, for invalidation by unsafe requests.

    Servers differ: some decode ``%2F``, ``%5C``, ``%2E``, ``%3B`` before routing,
    read ``\\`` as ``/``, strip ``;parameters`` from segments, cut at ``#``, merge
    ``//``; all of them resolve ``.`` and ``..`` (RFC 3986 section 5.2.4); many
    ignore a trailing ``/``. Each combination is tried, so that no stored entry the
    request may have changed survives it: dropping one entry too many costs a fill,
    keeping a stale one serves it. Letter case is left to ``loose_path``.
    """
    if not raw_path.startswith("/"):
        return frozenset()
    found: set[str] = set()
    for bits in range(32):
        path = raw_path
        if bits & 1:
            path = _decode_structural(path)
        if bits & 2:
            path = path.replace("\\", "/")
        if bits & 4:
            path = path.partition("#")[0]
        if bits & 8:
            path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
        if bits & 16:
            while "//" in path:
                path = path.replace("//", "/")
        canonical = normalise_path(_remove_dot_segments(path))
        if canonical is not None:
            found.add(canonical)
            if canonical != "/":
                # normalise_path allows at most one trailing '/'.
                found.add(canonical[:-1] if canonical.endswith("/") else canonical + "/")
    return frozenset(found)


# Content codings a stored answer may carry, in the order a normalised
# ``Accept-Encoding`` lists them (Varnish's buckets, widened to what browsers send).
CODINGS = ("br", "gzip", "zstd")
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def normalise_accept_encoding(value: str | None) -> str | None:
    """The codings of ``CODINGS`` that ``value`` accepts, as one canonical value
    (``"br, gzip"``): what a fill forwards and what an encoded answer is keyed on,
    so that a client is only ever served an encoding it takes and browsers with
    different ``Accept-Encoding`` spellings share one variant.

    None when the header is absent, which RFC 9110 section 12.5.3 reads as "any
    coding"; ``"identity"`` when it is present (empty included) and accepts none of
    ``CODINGS``, so that such a client is neither keyed nor forwarded like one that
    sent nothing."""
    if value is None:
        return None
    accepted: set[str] = set()
    refused: set[str] = set()
    wildcard = False
    for item in value.lower().split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip()
        coding = "gzip" if coding == "x-gzip" else coding
        zero = not _weight_positive(params)
        if coding == "*":
            wildcard = not zero
        elif zero:
            refused.add(coding)
        else:
            accepted.add(coding)
    if wildcard:
        accepted |= set(CODINGS) - refused
    kept = [c for c in CODINGS if c in accepted and c not in refused]
    return ", ".join(kept) if kept else "identity"


def _weight_positive(params: str) -> bool:
    """Do an item's parameters (after its first ``;``) give it a weight above 0?

    Every ``q`` parameter counts, wherever it stands (``gzip;x=1;q=0`` refuses
    gzip); one that is not a qvalue (RFC 9110 section 12.4.2: ``0`` to ``1`` with
    up to three decimals) refuses the coding rather than guess."""
    for param in params.split(";"):
        name, _, weight = param.partition("=")
        if name.strip() != "q":
            continue
        weight = weight.strip()
        if _QVALUE.fullmatch(weight) is None or not weight.strip("0."):
            return False
    return True


# Request fields whose whole value is case-insensitive: language tags (RFC 9110
# section 12.5.4, RFC 5646) and charset names (section 12.5.2), with their q.
_CASELESS_FIELDS = frozenset({"accept-language", "accept-charset"})


def normalise_field(name: str, value: str | None) -> str | None:
    """A request header's value as a key holds it (``name`` lower-case), so that
    spellings an app cannot tell apart share an entry (RFC 9111 section 4.1: the
    selecting fields may be normalised).

    Conservative: field lines already combined with ``", "`` have the whitespace
    around their commas (outside quoted strings) and at their ends trimmed and
    empty members dropped; case is folded only where the field's definition makes
    it meaningless (``Accept-Language`` and ``Accept-Charset`` whole, ``Accept``
    media ranges and parameter names, not parameter values); member order is kept.
    ``Accept-Encoding`` is reduced to the codings sidecache stores
    (``normalise_accept_encoding``).
    """
    if value is None:
        return None
    if name == "accept-encoding":
        return normalise_accept_encoding(value)
    if "," in value or value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
        value = ", ".join(split_list(value, ","))
    if name in _CASELESS_FIELDS:
        return value.lower()
    if name == "accept":
        return ", ".join(_media_range(member) for member in split_list(value, ","))
    return value


def _media_range(member: str) -> str:
    """One ``Accept`` member: type, subtype and parameter names lower-cased,
    whitespace around ``;`` and ``=`` removed; parameter values kept as sent."""
    parts = split_list(member, ";")
    out = [parts[0].lower()] if parts else []
    for param in parts[1:]:
        pname, sep, pvalue = param.partition("=")
        out.append(pname.strip(" \t").lower() + sep + pvalue.strip(" \t"))
    return ";".join(out)
