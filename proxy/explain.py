"""``GET /explain``: what sidecache would do with a request now, and why.

Owns reading the question (``url``, ``method``, ``h`` headers, ``peer``) and writing
the answer. The answer is never decided here: the public handler's own code
decides (``Proxy.explain``: ``_classify``, ``_find``, ``flow.on_lookup``, and
``flow.on_shared`` for the shared tier), on the entries as they are, peeked at
(no recency bump, no expiry, no counters, no fill, nothing sent upstream).

Header values given with ``h`` are inputs only: the answer names headers and
shows digests of values, never a value (the normalised host excepted, which is
the key's own). Error messages name a parameter, never its value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Address
from proxy.entry import StoredResponse
from proxy.flow import (
    Fetch,
    Forward,
    OnLookup,
    Revalidate,
    Serve,
    Served,
    StaleWhileRevalidate,
    on_shared,
)
from proxy.freshness import Basis
from proxy.keys import normalise_path, split_absolute
from proxy.policy import (
    Bypass,
    BypassReason,
    Lookup,
    age,
    freshness,
    origin_assessment,
    stale_windows,
)

if TYPE_CHECKING:
    from proxy.config import RouteConfig
    from proxy.handler import Explained
    from proxy.runtime import Runtime

# RFC 9110 section 5.6.2: a method and a field name are tokens.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
MAX_HEADERS = 64

_WHY: dict[BypassReason, str] = {
    BypassReason.NO_ROUTE: "no route matches the path: proxied unchanged, never stored",
    BypassReason.METHOD: "the method is not one of the route's methods: forwarded, not stored",
    BypassReason.CREDENTIALS: "the request carries Authorization or Cookie and the route's "
    "credentials is bypass: forwarded, not stored",
    BypassReason.AMBIGUOUS: "the target has no single normal form (an encoded '/', '\\' or "
    "control byte, a '.' or '..' segment, '//', a ';' parameter, a bad %-escape, or a "
    "character outside RFC 3986): never served from or stored under another entry",
    BypassReason.REQUEST_BODY: "the request has a body the key cannot see: forwarded",
    BypassReason.CONNECTION: "Connection names a header the key holds: forwarded",
    BypassReason.UPGRADE: "a WebSocket handshake: tunnelled to the app",
}


@dataclass(frozen=True, slots=True)
class Question:
    """A request to explain, as the public port would read it."""

    method: str
    target: str  # origin-form (``/path?query``) or absolute-form
    headers: tuple[tuple[str, str], ...]
    peer: str | None
    host_from: str  # "url", "header" or "listen"


def digest(value: str) -> str:
    """A short digest standing for a header value the answer must not show."""
    data = value.encode("utf-8", "surrogateescape")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def key_digest(key: str) -> str:
    """The whole key's digest: the name the shared tier stores it under
    (``SharedTier.hashed``), so that it can be looked for there."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def read_question(
    url: Sequence[str],
    method: Sequence[str],
    h: Sequence[str],
    peer: Sequence[str],
    listen: Address,
) -> Question | str:
    """The question in ``/explain``'s query parameters, or what is wrong with it.
    Without an absolute ``url`` or a ``Host`` among ``h``, the request is taken as
    sent to the public port's address (``listen``, a wildcard read as loopback)."""
    if len(url) != 1 or not url[0]:
        return "give exactly one url, e.g. url=/api/photo/12"
    target = url[0]
    if not target.startswith("/") and split_absolute(target) is None:
        return "url must be a path (/...) or an absolute http(s) URL"
    if any(c <= " " or c == "\x7f" for c in target):
        return "url must not contain spaces or control characters (percent-encode them)"
    if len(method) > 1:
        return "give at most one method"
    verb = method[0] if method else "GET"
    if not verb or any(c not in _TCHAR for c in verb):
        return "method must be an HTTP method token, e.g. GET"
    if len(h) > MAX_HEADERS:
        return f"at most {MAX_HEADERS} h parameters"
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(h, start=1):
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or any(c not in _TCHAR for c in name):
            # Never the parameter itself: it may be all value.
            return f"h parameter {number} must be 'Name: value' with a valid header name"
        if any(c in "\r\n\x00" for c in value):
            return f"h parameter {number} ({name}): the value holds CR, LF or NUL"
        headers.append((name, value.strip(" \t")))
    if len(peer) > 1:
        return "give at most one peer"
    host_from = "url" if not target.startswith("/") else "header"
    if target.startswith("/") and not any(n.lower() == "host" for n, _ in headers):
        headers.append(("Host", _listen_host(listen)))
        host_from = "listen"
    return Question(verb, target, tuple(headers), peer[0] if peer else None, host_from)


def _listen_host(listen: Address) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen.host, listen.host)
    return f"[{host}]:{listen.port}" if ":" in host else f"{host}:{listen.port}"


def request_headers(question: Question) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(question.headers))


async def explain(runtime: Runtime, question: Question) -> dict[str, Any]:
    """The answer: the request, its path, route, key, decision, the outcome the next
    such request would get (``X-Cache``) and the entry that decides it."""
    headers = request_headers(question)
    proxy = runtime.proxy
    explained = proxy.explain(question.method, question.target, headers, question.peer)
    doc: dict[str, Any] = {"request": _request_doc(question)}
    decision = explained.decision
    if decision is None:
        doc["decision"] = {"action": "refuse", "reason": explained.target}
        doc["outcome"] = {"x_cache": None, "status": 400, "why": "refused by the public port"}
        return doc
    raw_path = _raw_path(question.target)
    path = decision.path if isinstance(decision, Lookup) else normalise_path(raw_path)
    doc["path"] = {"raw": raw_path, "normalised": path, "ambiguous": path is None}
    doc["route"] = _route_doc(runtime, decision.route, path)
    match decision:
        case Bypass():
            doc["decision"] = _bypass_doc(decision)
            reason = decision.reason.value
            doc["outcome"] = {
                "x_cache": "BYPASS",
                "step": "tunnel" if decision.reason is BypassReason.UPGRADE else "forward",
                "reason": reason,
                "why": f"sent to the app as it is (Cache-Status: fwd=bypass; detail={reason})",
            }
            doc["key"] = None
            doc["entry"] = None
        case Lookup():
            doc.update(await _lookup_doc(runtime, decision, explained, headers))
        case _:
            assert_never(decision)
    return doc


def _raw_path(target: str) -> str:
    if not target.startswith("/"):
        parts = split_absolute(target)
        target = parts[2] if parts is not None else target
    return target.partition("?")[0]


def _request_doc(question: Question) -> dict[str, Any]:
    return {
        "method": question.method,
        "url": question.target,
        "host_from": question.host_from,
        # Names only: values never leave the question.
        "headers": sorted({name.lower() for name, _ in question.headers}),
        "peer": question.peer,
    }


def _route_doc(runtime: Runtime, route: RouteConfig | None, path: str | None) -> Any:
    if route is None:
        return None
    match = runtime.proxy.routes.match(path) if path is not None else None
    return {
        "name": route.name,
        "index": next((i for i, r in enumerate(runtime.proxy.config.routes) if r is route), None),
        "match": route.match,
        "params": dict(match.params) if match is not None and match.route is route else {},
        "why": f"the first route whose match template fits {path}"
        if path is not None
        else "the path is ambiguous: no route is matched",
        "methods": list(route.methods),
        "freshness": route.freshness,
        "credentials": route.credentials,
        "query": route.query if isinstance(route.query, str) else list(route.query),
        "vary": list(route.vary),
    }


def _bypass_doc(decision: Bypass) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "action": "bypass",
        "reason": decision.reason.value,
        "why": _WHY[decision.reason],
    }
    if decision.invalidate is not None:
        doc["invalidates"] = sorted(decision.invalidate)
        doc["why"] += "; a 2xx answer drops the entries stored under these paths"
    return doc


def key_fields(key: str, route: RouteConfig) -> dict[str, Any]:
    """The parts of a key built by ``keys.build_key``: route, host, target, then one
    field per ``route.vary`` name, then ``cred:`` and ``fwd:`` fields. Header values
    shown as digests; the credential digest as it is (it is one already)."""
    parts = key.split("\n")
    fields: dict[str, Any] = {"route": parts[0], "host": parts[1], "target": parts[2]}
    rest = parts[3:]
    vary: dict[str, str | None] = {}
    if len(parts) > 3:
        for field in rest[: len(route.vary)]:
            name, colon, value = field.partition(":")
            vary[name.rstrip("!")] = digest(value) if colon else None
        rest = rest[len(route.vary) :]
    fields["vary"] = vary
    fields["credentials"] = next((f[5:] for f in rest if f.startswith("cred:")), None)
    fields["forwarded"] = [f[4:].partition(":")[0] for f in rest if f.startswith("fwd:")]
    return fields


async def _lookup_doc(
    runtime: Runtime,
    lookup: Lookup,
    explained: Explained,
    headers: CIMultiDictProxy[str],
) -> dict[str, Any]:
    route = lookup.route
    assert explained.key is not None and explained.step is not None
    key, now = explained.key, explained.now
    fields = key_fields(lookup.key, route)
    credentials = (
        "per-user: the key holds a digest of Authorization and Cookie"
        if fields["credentials"] is not None
        else "shared: one entry for everybody, credentials still forwarded on a miss"
        if route.credentials == "shared" and ("Authorization" in headers or "Cookie" in headers)
        else "stored only if the response says it may be shared (RFC 9111 section 3.5)"
        if lookup.authorized
        else None
    )
    decision: dict[str, Any] = {"action": "lookup", "reason": "cacheable"}
    if credentials is not None:
        decision["credentials"] = credentials
    if lookup.partial:
        decision["range"] = "a stored entry answers the range; a miss is forwarded, not stored"
    doc: dict[str, Any] = {
        "decision": decision,
        "key": {"digest": key_digest(lookup.key), **fields},
    }
    vary = explained.vary
    entry = explained.entry
    doc["vary"] = {
        "learned": list(vary) if vary is not None else None,
        "request": {n: _value_digest(headers, n) for n in vary} if vary else {},
        "variant_digest": key_digest(key) if vary is not None else None,
        "found_under": None if entry is None else "variant" if entry.key != lookup.key else "key",
    }
    step: OnLookup = explained.step
    if explained.shadow:
        # Forwarded as it is; what the cache would do is what the route counts.
        would = _outcome(step, False)
        doc["decision"]["shadow"] = "mode: shadow: forwarded, and counted as the cache would do"
        doc["shared_tier"] = None
        doc["outcome"] = {
            "x_cache": "BYPASS",
            "step": "forward",
            "reason": "shadow",
            "why": "a shadow route: sent to the app as it is (Cache-Status: fwd=bypass; "
            "detail=shadow)",
            "would_be": would,
        }
        doc["entry"] = None if entry is None else _entry_doc(entry, route, now, "shadow index")
        return doc
    tier = "memory" if entry is not None else None
    shared: dict[str, Any] | None = None
    fill = runtime.coalescer.get(key) is not None
    if isinstance(step, Revalidate | Fetch) and not fill and runtime.shared is not None:
        # What ``Proxy._miss`` does next: the shared tier, asked once.
        answered, found = await runtime.shared.peek(key)
        if found is not None and found.key != key:
            found = None
        shared = {"answered": answered, "found": found is not None}
        again = on_shared(found, step, lookup, headers, runtime.clock())
        if found is not None and again is not step:
            step, entry, tier = again, found, "shared"
    doc["shared_tier"] = shared
    doc["outcome"] = _outcome(step, fill)
    doc["entry"] = None if entry is None or tier is None else _entry_doc(entry, route, now, tier)
    return doc


def _value_digest(headers: CIMultiDictProxy[str], name: str) -> str | None:
    values = headers.getall(name, [])
    return digest(", ".join(values)) if values else None


def _outcome(step: OnLookup, fill: bool) -> dict[str, Any]:
    joins = "; joins the fill already running for this key" if fill else ""
    match step:
        case Serve(_, served, detail):
            x_cache = "HIT" if served is Served.HIT else "STALE"
            where = "the shared tier (then kept in memory)" if detail == "shared" else "memory"
            return {"x_cache": x_cache, "step": "serve", "why": f"a fresh entry in {where}"}
        case StaleWhileRevalidate():
            return {
                "x_cache": "STALE",
                "step": "stale-while-revalidate",
                "why": "the entry is stale within stale-while-revalidate: served at once "
                "while one background refresh runs",
            }
        case Revalidate():
            # The app decides: its 304 makes the answer a hit on the refreshed entry.
            return {
                "x_cache": "MISS",
                "x_cache_if_304": "HIT",
                "step": "revalidate",
                "why": "the entry is stale: a conditional request with its validators; "
                "a 304 refreshes it, an error may serve it within stale-if-error" + joins,
            }
        case Fetch(stale):
            why = "nothing usable stored" if stale is None else "a stale entry without validators"
            return {
                "x_cache": "MISS",
                "step": "fetch",
                "why": f"{why}: fetched from the app, stored if the response may be" + joins,
            }
        case Forward(fwd, detail):
            return {
                "x_cache": "MISS",
                "step": "forward",
                "why": f"forwarded, not stored ({fwd}{', ' + detail if detail else ''})",
            }
        case _:
            assert_never(step)


def _entry_doc(entry: StoredResponse, route: RouteConfig, now: float, tier: str) -> dict[str, Any]:
    swr, sie = stale_windows(entry, route)
    late = now - entry.fresh_until
    return {
        "tier": tier,
        "key_digest": key_digest(entry.key),
        "status": entry.status,
        "state": freshness(entry, route, now).value,
        "age_s": age(entry, now),
        "stored_s_ago": round(now - entry.stored_at, 3),
        "fresh_for_s": round(-late, 3),
        "stale_while_revalidate_s": swr,
        "stale_while_revalidate_left_s": round(max(0.0, swr - max(late, 0.0)), 3),
        "stale_if_error_s": sie,
        "stale_if_error_left_s": round(max(0.0, sie - max(late, 0.0)), 3),
        "kept_for_s": round(entry.stale_until - now, 3),
        "must_revalidate": entry.must_revalidate,
        "validators": {
            "etag": entry.origin_etag,
            "last_modified": entry.last_modified,
            "served_etag": entry.etag,
        },
        "size": {"body_bytes": len(entry.body), "charged_bytes": entry.size},
        "vary": list(entry.vary),
        "lifetime": lifetime_rule(entry, route),
    }


def lifetime_rule(entry: StoredResponse, route: RouteConfig) -> dict[str, Any]:
    """The rule that gave ``entry`` its lifetime, read again from its stored headers
    with the assessment that gave it (``policy.origin_assessment``)."""
    given = round(entry.fresh_until - entry.stored_at, 3)
    if route.freshness == "route":
        return {"rule": "ttl", "why": "freshness: route: the route's ttl", "fresh_for_s": given}
    a = origin_assessment(route, entry.status, entry.headers)
    why = {
        Basis.S_MAXAGE: "the app's s-maxage",
        Basis.MAX_AGE: "the app's max-age",
        Basis.EXPIRES: "the app's Expires",
        Basis.HEURISTIC: "heuristic: a fraction of the time since Last-Modified",
        Basis.DEFAULT: "the route's ttl: the app gave no lifetime",
        Basis.NONE: "no lifetime: stale on arrival",
        Basis.UNCACHEABLE: "no lifetime",
    }[a.basis]
    rule = "ttl" if a.basis is Basis.DEFAULT else a.basis.value
    if a.directives.no_cache:
        rule, why = "no-cache", "the app's no-cache: revalidated before every use"
    return {"rule": rule, "why": why, "fresh_for_s": given}
