"""The control-port application: stats, health, readiness, purge.

Owns the operator API of SPEC "Control port". It binds its own socket (loopback
by default), separate from the public port, so nothing a client sends to the
public port can reach it. Mutating endpoints require the configured bearer
token, compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import hdrs, web

from proxy.config import Address
from proxy.dashboard import latency_ms, series, top_routes
from proxy.dashboard_page import PAGE
from proxy.explain import Question, explain, read_question
from proxy.keys import normalise_path
from proxy.metrics import CONTENT_TYPE, render
from proxy.runtime import Runtime

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")
# Purge bodies are tiny; refuse anything larger before reading it.
MAX_CONTROL_BODY = 64 * 1024
READY_PROBE_TIMEOUT = 2.0
SERVER_NAME = "sidecache"


def build_control_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_CONTROL_BODY)
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/stats", _stats)
    app.router.add_get("/", dashboard)
    app.router.add_get("/api/dashboard", _dashboard_data)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_post("/purge", _purge)
    app.router.add_get("/explain", _explain)
    app.on_response_prepare.append(name_server)
    return app


async def name_server(request: web.Request, response: web.StreamResponse) -> None:
    # Instead of aiohttp's default, which gives its version and Python's.
    response.headers[hdrs.SERVER] = SERVER_NAME


def json_answer(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, separators=(",", ":")),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _stats(request: web.Request) -> web.Response:
    return json_answer(request.app[RUNTIME_KEY].snapshot())


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            # Everything the page needs is in it or on this origin.
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; img-src 'self' data:",
        },
    )


async def _dashboard_data(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    return json_answer(
        {
            "stats": runtime.snapshot(),
            "series": series(runtime.history),
            "latency": latency_ms(runtime.history),
            "routes": top_routes(runtime.stats),
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=render(request.app[RUNTIME_KEY].metrics),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


async def _readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    if runtime.draining:
        # Stopping: load balancers should send no more, while in-flight requests end.
        return web.Response(status=503, text="draining\n", headers={"Cache-Control": "no-store"})
    timeout = min(READY_PROBE_TIMEOUT, runtime.config.upstream.connect_timeout * 2)
    try:
        async with asyncio.timeout(timeout):
            ready = await runtime.upstream.probe()
    except TimeoutError:
        ready = False
    if runtime.shared is not None:
        # Degraded, not unready: without the shared tier requests are still served.
        note = f"shared tier {runtime.shared.breaker.state.value}\n"
    else:
        note = ""
    if ready:
        return web.Response(text="ready\n" + note, headers={"Cache-Control": "no-store"})
    return web.Response(
        status=503, text="upstream not answering\n" + note, headers={"Cache-Control": "no-store"}
    )


def authorised(request: web.Request, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp keeps undecodable header bytes as surrogates: compare them as the
    # bytes they were, so a stray byte is a wrong token (401), never a 500.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def unauthorised() -> web.Response:
    return web.Response(
        status=401,
        text='{"error":"a valid bearer token is required"}',
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="sidecache"'},
    )


_PURGE_SHAPES = 'body must be one of {"path": "/..."}, {"route": "name"}, {"all": true}'


async def read_purge(request: web.Request) -> tuple[str, str | None] | web.Response:
    """What a ``/purge`` body asks for: (``path``, normalised path), (``route``, name)
    or (``all``, None); else the 400 answer. Whether a route exists is not checked."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return json_answer({"error": "body must be JSON"}, 400)
    if not isinstance(body, dict) or len(body) != 1:
        return json_answer({"error": _PURGE_SHAPES}, 400)
    for name in ("path", "route"):
        value = body.get(name)
        if isinstance(value, str) and not value.strip():
            # An empty name (an unset shell variable) must never widen to "all".
            return json_answer(
                {"error": f'{name} must not be empty (everything is {{"all": true}})'}, 400
            )
    if "path" in body and isinstance(body["path"], str):
        raw = body["path"].partition("?")[0]
        path = normalise_path(raw)
        if path is None:
            return json_answer({"error": f"{raw!r} is not a valid path"}, 400)
        return "path", path
    if "route" in body and isinstance(body["route"], str):
        return "route", body["route"]
    if body.get("all") is True:
        return "all", None
    return json_answer({"error": _PURGE_SHAPES}, 400)


def no_such_route(name: str) -> web.Response:
    return json_answer({"error": f"no route named {name!r}"}, 404)


def knows_route(runtime: Runtime, name: str) -> bool:
    # A route a reload removed still names its entries (and the shared tier's).
    return name in {r.name for r in runtime.config.routes} or runtime.tiers.local.knows_route(name)


async def _purge(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    if not authorised(request, runtime.config.control.token):
        return unauthorised()
    target = await read_purge(request)
    if isinstance(target, web.Response):
        return target
    kind, value = target
    if kind == "route" and value is not None and not knows_route(runtime, value):
        return no_such_route(value)
    return json_answer({"purged": await runtime.tiers.purge(kind, value)})


def explain_question(request: web.Request, listen: Address) -> Question | web.Response:
    """The request ``/explain`` asks about, or the 400 answer (which names the
    wrong parameter, never a header value)."""
    query = request.query
    question = read_question(
        query.getall("url", []),
        query.getall("method", []),
        query.getall("h", []),
        query.getall("peer", []),
        listen,
    )
    if isinstance(question, str):
        return json_answer({"error": question}, 400)
    return question


async def _explain(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    if not authorised(request, runtime.config.control.token):
        return unauthorised()
    return await explained(request, runtime)


async def explained(request: web.Request, runtime: Runtime) -> web.Response:
    """``/explain`` once authorised (the supervisor's ``/_worker/explain`` too)."""
    question = explain_question(request, runtime.config.listen)
    if isinstance(question, web.Response):
        return question
    return json_answer(await explain(runtime, question))
