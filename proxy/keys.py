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
from collections.abc import Sequence
from urllib.parse import unquote_plus

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
    the named parameters, in their original order. Dropped parameters are not
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
    kept = [part for part in raw_query.split("&") if unquote_plus(part.partition("=")[0]) in wanted]
    return "&".join(kept)


def credential_digest(authorization: str | None, cookie: str | None) -> str:
    """A digest of the request's credentials; the raw values never enter a key.

    Length-prefixed so that no pair of (authorization, cookie) values can produce
    the same input as another pair.
    """
    h = hashlib.blake2b(digest_size=20, person=b"sidecache.cred")
    for value in (authorization, cookie):
        if value is None:
            h.update(b"-")
        else:
            data = value.encode("utf-8", "surrogateescape")
            h.update(b"+%d:" % len(data))
            h.update(data)
    return h.hexdigest()


def build_key(
    route: str,
    host: str,
    target: str,
    vary: Sequence[tuple[str, str | None]] = (),
    credentials: str | None = None,
) -> str:
    """The cache key. ``target`` is the normalised path plus ``?query`` when non-empty.

    Fields are separated by a newline, which can appear in none of them (paths and
    queries with control bytes are refused, header values cannot hold one).
    """
    parts = [route, host, target]
    parts.extend(f"{name}:{value}" if value is not None else f"{name}!" for name, value in vary)
    if credentials is not None:
        parts.append("cred:" + credentials)
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
