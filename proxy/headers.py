"""Header rules: hop-by-hop filtering, forwarding headers, validators, Cache-Status.

Owns the header transformations a proxy makes in both directions (RFC 9110
section 7.6.1 for hop-by-hop, RFC 9211 for ``Cache-Status``) and the parsing of
``Cache-Control`` and ``If-None-Match``. Works on plain ``(name, value)`` pairs
so that it can be tested without a server. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from proxy.entry import Headers
from proxy.freshness import SURROGATE_DEVICE
from proxy.keys import normalise_accept_encoding

# What must never reach a relayed head inside a field: it would end the line.
_BREAK = re.compile("[\r\n\0]")

PROXY_NAME = "sidecache"
VIA_VALUE = "1.1 " + PROXY_NAME

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Set by the proxy from what it saw, never taken from the client: a client that
# could choose them could make the upstream build links to a host of its choice.
_PROXY_SET_REQUEST = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"}
)
# Inputs that frameworks and middlewares honour to rewrite the URL, the method,
# the host or the scheme they see, but which no cache key contains: on a cache
# fill they would let one client shape the response stored for everybody
# (cache poisoning). Removed from fills unless a route names them in ``vary``.
UNKEYED = frozenset(
    {
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-forwarded-path",
        "x-forwarded-uri",
        "x-original-url",
        "x-original-uri",
        "x-original-host",
        "x-rewrite-url",
        "x-host",
        "x-http-host-override",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-wap-profile",
        "front-end-https",
        # Scheme and mount-prefix overrides (Tornado, gunicorn, IIS ARR, WSGI).
        "x-scheme",
        "x-forwarded-protocol",
        "x-url-scheme",
        "x-arr-ssl",
        "x-script-name",
        # Client-address headers of CDNs and load balancers.
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-proxyuser-ip",
        "x-remote-addr",
        "x-original-forwarded-for",
        "x-envoy-external-address",
    }
)
# Proactive negotiation (RFC 9110 section 12.5.3-5), and the headers apps treat
# the same way (API versions, ``Prefer``, XHR markers, client hints), that apps
# often honour without saying ``Vary``: a fill sends them only when they are in the
# key (the route's ``vary``, or the app's own ``Vary`` learned from a stored
# variant), so that one client's language never becomes everybody's.
# ``Accept-Encoding`` is normalised instead (``keys.normalise_accept_encoding``)
# and an encoded answer keyed on it.
NEGOTIATION = frozenset(
    {
        "accept",
        "accept-language",
        "accept-charset",
        "accept-version",
        "api-version",
        "x-api-version",
        "accept-datetime",
        "prefer",
        "x-requested-with",
        # Client hints (RFC 8942) outside ``Sec-CH-``, which is matched by prefix.
        "dpr",
        "width",
        "viewport-width",
        "save-data",
        "device-memory",
        "rtt",
        "downlink",
        "ect",
    }
)
NEGOTIATION_PREFIX = "sec-ch-"
# Request headers whose value upstream is the proxy's doing (set, replaced or
# removed), so that the client's own value cannot stand for it in a cache key.
PROXY_CONTROLLED = (
    frozenset({"host", "via", "connection", "te", "keep-alive", "proxy-authorization"})
    | _PROXY_SET_REQUEST
    | UNKEYED
    | frozenset({"content-length", "expect", "transfer-encoding", "upgrade"})
)
# The body framing is the proxy's business on each hop; ``expect`` is answered
# by the proxy itself.
_FRAMING = frozenset({"content-length", "expect"})
# Conditional and range headers are removed from a cache fill: the fill must
# bring the whole representation, whatever the first client asked for.
_CONDITIONAL = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"}
)
# W3C Edge Architecture, section 2: a cache fill announces that sidecache reads
# ``Surrogate-Control`` (``freshness.from_surrogate_control``), by the device name
# its directives may be targeted at. It replaces the client's own: what is stored
# for everybody is asked for with sidecache's capabilities, not a client's claim.
SURROGATE_CAPABILITY = f'{SURROGATE_DEVICE}="Surrogate/1.0"'


def connection_tokens(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Header names listed in ``Connection``: hop-by-hop for this message only."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def end_to_end(headers: Iterable[tuple[str, str]], drop: frozenset[str] = frozenset()) -> Headers:
    """The headers that travel to the next hop: hop-by-hop and ``drop`` removed."""
    items = tuple(headers)
    hop = HOP_BY_HOP | connection_tokens(items) | drop
    return tuple((name, value) for name, value in items if name.lower() not in hop)


def request_headers_for_upstream(
    headers: Iterable[tuple[str, str]],
    *,
    client_ip: str,
    scheme: str,
    host: str,
    fill: bool,
    keyed: Iterable[str] = (),
    trusted: bool = False,
) -> Headers:
    """Headers to send upstream for a client request.

    ``host`` is the host the request is for, normalised as the cache key holds it
    (``keys.request_host``), and is sent as ``X-Forwarded-Host``: the client's raw
    ``Host`` never is, so that the app cannot see a value the key does not.
    ``fill`` marks a cache fill, which drops conditionals and ``Range`` so that the
    whole representation comes back, and the ``UNKEYED`` inputs, except those the
    route puts in its key (``keyed``, lower-case names); likewise ``NEGOTIATION``
    headers (and ``Sec-CH-*``) not in ``keyed``, and it sends ``Accept-Encoding``
    normalised and sidecache's own ``Surrogate-Capability``.

    ``trusted`` marks a request from a trusted peer (``server.trusted_proxies``):
    the client's address is appended to its ``X-Forwarded-For``, and its
    ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``Forwarded`` are passed on
    (each set from what sidecache saw when absent, ``Forwarded`` left absent).
    Otherwise all four are set from what sidecache saw, the client's dropped.
    """
    items = tuple(headers)
    if trusted:
        forwarded_for = [v.strip() for n, v in items if n.lower() == "x-forwarded-for"]
        scheme = ", ".join(get_all(items, "x-forwarded-proto")) or scheme
        host = ", ".join(get_all(items, "x-forwarded-host")) or host
        client_ip = ", ".join([*(v for v in forwarded_for if v), client_ip])
        passed = tuple((n, v) for n, v in items if n.lower() == "forwarded")
    drop = _PROXY_SET_REQUEST | _FRAMING
    if fill:
        keyed_names = frozenset(keyed)
        drop = drop | _CONDITIONAL | ((UNKEYED | NEGOTIATION) - keyed_names)
        drop = drop | {"accept-encoding", "surrogate-capability"}
    kept = end_to_end(items, drop)
    if fill:
        kept = tuple(
            (n, v)
            for n, v in kept
            if not n.lower().startswith(NEGOTIATION_PREFIX) or n.lower() in keyed_names
        )
        codings = [v for n, v in items if n.lower() == "accept-encoding"]
        # Absent stays absent ("any coding"); one that accepts none of ours is
        # sent as ``identity``, never as nothing.
        coding = normalise_accept_encoding(", ".join(codings)) if codings else None
        if coding is not None:
            kept = (*kept, ("Accept-Encoding", coding))
        kept = (*kept, ("Surrogate-Capability", SURROGATE_CAPABILITY))
    via = [v for n, v in kept if n.lower() == "via"]
    out = [(n, v) for n, v in kept if n.lower() != "via"]
    out.append(("Via", ", ".join([*via, VIA_VALUE])))
    if trusted:
        out.extend(passed)
    out.append(("X-Forwarded-For", client_ip))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    return tuple(out)


def forwardable(raw: Iterable[tuple[bytes, bytes]]) -> bool:
    """Can every header value travel upstream byte for byte?

    The server decodes header bytes as UTF-8 (undecodable bytes as surrogates)
    and the client encodes them back, silently dropping what was undecodable: a
    value with such obs-text bytes (RFC 9110 section 5.5) would reach the app
    other than it was sent. ASCII and valid UTF-8 travel intact.
    """
    for _, value in raw:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


def response_headers_for_client(headers: Iterable[tuple[str, str]]) -> Headers:
    """Upstream response headers kept for the client (and for storage).

    ``Content-Length`` is removed because the proxy frames each response itself.
    """
    return end_to_end(headers, frozenset({"content-length"}))


def with_via(headers: Headers) -> Headers:
    """Append this proxy to ``Via`` (RFC 9110 section 7.6.3)."""
    via = [v for n, v in headers if n.lower() == "via"]
    rest = tuple((n, v) for n, v in headers if n.lower() != "via")
    return (*rest, ("Via", ", ".join([*via, VIA_VALUE])))


def interim_for_client(status: int, reason: str, headers: Headers) -> bytes | None:
    """An app's interim response as relayed to the client, or None when it is not.

    ``100 Continue`` is not relayed: it answers this proxy's request (sidecache
    answers a client's ``Expect: 100-continue`` itself); ``101`` switches the app's
    connection, not the client's. Any other ``1xx`` (``103 Early Hints``) goes on
    with its end-to-end headers and this proxy in ``Via``. Values are written back
    as the parser decoded them (UTF-8, undecodable bytes kept as surrogates); a
    field or reason holding a line break (a lenient parser lets some through) is
    left out, as it would end the head early.
    """
    if not 100 < status < 200 or status == 101:
        return None
    lines = [f"HTTP/1.1 {status} {'' if _BREAK.search(reason) else reason}".rstrip()]
    lines += [
        f"{name}: {value}"
        for name, value in with_via(end_to_end(headers))
        if not _BREAK.search(name) and not _BREAK.search(value)
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def get(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), or None."""
    lname = name.lower()
    return next((v for n, v in headers if n.lower() == lname), None)


def get_all(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    lname = name.lower()
    return [v for n, v in headers if n.lower() == lname]


def compute_etag(body: bytes | bytearray) -> str:
    """A strong validator derived from the body, for responses stored without one."""
    return '"sc-' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def if_none_match_matches(header: str, etag: str) -> bool:
    """RFC 9110 section 13.1.2: weak comparison of ``If-None-Match`` against ``etag``."""
    if header.strip() == "*":
        return True
    mine = _opaque(etag)
    return any(_opaque(candidate) == mine for candidate in header.split(","))


# A plain hit's member but for its ttl: the hot path appends the ttl to it
# (``cache_status`` below says the same, through its first branch).
PLAIN_HIT = f"{PROXY_NAME}; hit; ttl="


def cache_status(
    *,
    hit: bool,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    ttl: float | None = None,
    detail: str | None = None,
) -> str:
    """An RFC 9211 ``Cache-Status`` member for this proxy."""
    if (
        hit
        and ttl is not None
        and fwd is None
        and fwd_status is None
        and detail is None
        and not stored
    ):
        return PLAIN_HIT + str(int(ttl))
    parts = [PROXY_NAME]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if stored:
        parts.append("stored")
    if ttl is not None:
        parts.append(f"ttl={int(ttl)}")
    if detail is not None:
        parts.append(f"detail={detail}")
    return "; ".join(parts)


def websocket_upgrade(connection: str | None, upgrade: str | None) -> bool:
    """Does a request ask to switch to WebSocket (``Connection: Upgrade`` and
    ``Upgrade: websocket``, RFC 6455 section 4.1)? Other protocols are not
    tunnelled: their ``Upgrade`` is dropped like any hop-by-hop header."""
    if connection is None or upgrade is None:
        return False
    options = {o.strip().lower() for o in connection.split(",")}
    protocols = {p.strip().partition("/")[0].lower() for p in upgrade.split(",")}
    return "upgrade" in options and "websocket" in protocols


def tunnel_handshake_headers(headers: Headers) -> Headers:
    """What of a pass-through request's headers goes with the WebSocket handshake
    the proxy makes upstream: all but the ``Sec-WebSocket-*`` of the client's own
    handshake (the upstream hop has its own key, version and extensions; the
    subprotocols are offered separately)."""
    return tuple((n, v) for n, v in headers if not n.lower().startswith("sec-websocket-"))
