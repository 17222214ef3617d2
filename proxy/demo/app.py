"""The demo photo app, unfixed: every ``GET /api/photo/{id}`` reads the blob.

It reproduces the application of the incident before its fix: no cache, the
whole ``Photo`` row (blob included) loaded on every request, a pool of 20 + 50
connections, and optionally a per-query delay (``db_latency``) during which the
connection stays checked out, as it would while waiting on a remote database.
When the pool runs dry a request waits ``pool_timeout`` seconds and then fails
with 503, and the reason is logged.

With ``etag`` (``--etag``), not the original any more: a photo is sent with its
``ETag`` (stored in its row with the photo), and a request whose ``If-None-Match``
matches it is answered ``304`` after a query that reads the tag alone, never the
blob. ``/_demo/stats`` counts those reads apart from the blob reads.

Users are identified by ``Authorization: Bearer demo-user-<id>`` (ids 1-5).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.helpers import ETAG_ANY, ETag
from aiohttp.typedefs import Handler
from sqlalchemy import ColumnElement, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.demo.db import Photo, photo_etag

log = logging.getLogger(__name__)

TOKEN_PREFIX = "demo-user-"
MAX_UPLOAD = 32 * 1024 * 1024


@dataclass
class DemoState:
    engine: AsyncEngine
    db_latency: float = 0.0
    etag: bool = False  # send ETags and answer If-None-Match (--etag)
    pool_timeouts: int = 0
    photo_reads: int = 0  # rows read with their blob
    bytes_read: int = 0
    etag_reads: int = 0  # rows read for their etag alone (If-None-Match, --etag)
    not_modified: int = 0  # of those, answered 304


STATE: web.AppKey[DemoState] = web.AppKey("demo_state", DemoState)


class PoolExhausted(Exception):
    pass


@asynccontextmanager
async def db_session(state: DemoState) -> AsyncIterator[AsyncSession]:
    """A session holding a pooled connection for at least ``db_latency`` seconds."""
    async with AsyncSession(state.engine, expire_on_commit=False) as session:
        try:
            await session.connection()  # check a connection out now, as a query would
        except sa_exc.TimeoutError as exc:
            state.pool_timeouts += 1
            log.warning("database pool exhausted: %s", str(exc).splitlines()[0])
            raise PoolExhausted from exc
        if state.db_latency:
            await asyncio.sleep(state.db_latency)
        yield session


def _user(request: web.Request) -> int | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        return None
    suffix = token[len(TOKEN_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


def _int(request: web.Request, name: str) -> int:
    value = request.match_info[name]
    if not value.isdigit():
        raise web.HTTPNotFound(text="not found\n")
    return int(value)


def _photo_json(p: Photo) -> dict[str, object]:
    return {
        "id": p.id,
        "event_id": p.event_id,
        "user_id": p.user_id,
        "photographer_id": p.photographer_id,
        "filename": p.filename,
        "content_type": p.content_type,
        "url": f"/api/photo/{p.id}",
        "created_at": p.created_at.isoformat() if p.created_at else None,
    }


_LIST_COLUMNS = (
    Photo.id,
    Photo.event_id,
    Photo.user_id,
    Photo.photographer_id,
    Photo.filename,
    Photo.content_type,
    Photo.created_at,
)


async def get_photo(request: web.Request) -> web.Response:
    """The endpoint of the incident: the blob comes from the database every time.

    With ``etag``, a matching ``If-None-Match`` is answered 304 from the row's
    ``etag`` column alone.
    """
    state = request.app[STATE]
    photo_id = _int(request, "id")
    conditions = request.if_none_match if state.etag else None
    if conditions:  # else (no header, or no valid tag in it) as the original
        async with db_session(state) as session:
            row = (await session.execute(select(Photo.etag).where(Photo.id == photo_id))).first()
        if row is None:
            raise web.HTTPNotFound(text="no such photo\n")
        state.etag_reads += 1
        etag = row.etag
        if etag is not None and names_etag(conditions, etag):
            state.not_modified += 1
            return web.Response(status=304, headers={"ETag": _quoted(etag)})
    async with db_session(state) as session:
        photo = await session.get(Photo, photo_id)
    if photo is None:
        raise web.HTTPNotFound(text="no such photo\n")
    state.photo_reads += 1
    state.bytes_read += len(photo.photo_data)
    response = web.Response(body=photo.photo_data, content_type=photo.content_type)
    if state.etag and photo.etag is not None:
        response.headers["ETag"] = _quoted(photo.etag)
    return response


def names_etag(conditions: tuple[ETag, ...], etag: str) -> bool:
    """Whether ``If-None-Match`` names the photo tagged ``etag``: then it is answered 304.

    RFC 9110 section 13.1.2: ``*`` matches any current representation, and tags
    are compared weakly (a ``W/`` prefix on either side is ignored).
    """
    return any(c.value in (ETAG_ANY, etag) for c in conditions)


def _quoted(etag: str) -> str:
    return f'"{etag}"'


async def my_photos(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        raise web.HTTPUnauthorized(
            text="login required\n", headers={"WWW-Authenticate": 'Bearer realm="demo"'}
        )
    return await _photo_list(request, Photo.user_id == user)


async def event_photos(request: web.Request) -> web.Response:
    return await _photo_list(request, Photo.event_id == _int(request, "id"))


async def _photo_list(request: web.Request, condition: ColumnElement[bool]) -> web.Response:
    """Photos matching ``condition`` as JSON, without their blobs (columns chosen)."""
    async with db_session(request.app[STATE]) as session:
        rows = (
            await session.execute(select(*_LIST_COLUMNS).where(condition).order_by(Photo.id))
        ).all()
    return web.json_response([_photo_json(r) for r in rows])  # type: ignore[arg-type]


async def events(request: web.Request) -> list[int]:
    async with db_session(request.app[STATE]) as session:
        return list(
            await session.scalars(select(Photo.event_id).distinct().order_by(Photo.event_id))
        )


async def index(request: web.Request) -> web.Response:
    links = "".join(f'<li><a href="/gallery/{e}">event {e}</a></li>' for e in await events(request))
    return web.Response(
        text=_page("sidecache demo", f"<h1>Events</h1><ul>{links}</ul>"),
        content_type="text/html",
    )


async def gallery(request: web.Request) -> web.Response:
    """The scrolling gallery: lazy-loaded full-size images, as in the original."""
    event_id = _int(request, "event_id")
    async with db_session(request.app[STATE]) as session:
        ids = list(
            await session.scalars(
                select(Photo.id).where(Photo.event_id == event_id).order_by(Photo.id)
            )
        )
    if not ids:
        raise web.HTTPNotFound(text="no such event\n")
    imgs = "".join(
        f'<img loading="lazy" src="/api/photo/{i}" alt="photo {i}" width="400" height="300">'
        for i in ids
    )
    body = f"<h1>Event {event_id}</h1><p>{len(ids)} photos</p><div class=grid>{imgs}</div>"
    return web.Response(text=_page(f"Event {event_id}", body), content_type="text/html")


async def upload(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        raise web.HTTPUnauthorized(text="login required\n")
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPBadRequest(text="send multipart/form-data with 'photo' and 'event_id'\n")
    reader = await request.multipart()
    fields: dict[str, bytes] = {}
    filename, content_type = "upload.jpg", "image/jpeg"
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "photo":
            filename = part.filename or filename
            content_type = part.headers.get("Content-Type", content_type)
        fields[part.name] = await part.read()
    if "photo" not in fields or not fields.get("event_id", b"").isdigit():
        raise web.HTTPBadRequest(text="multipart fields 'photo' and 'event_id' are required\n")
    async with db_session(request.app[STATE]) as session:
        photo = Photo(
            event_id=int(fields["event_id"]),
            user_id=user,
            photographer_id=user,
            filename=html.escape(filename),
            content_type=content_type,
            photo_data=fields["photo"],
            etag=photo_etag(fields["photo"]),
        )
        session.add(photo)
        await session.commit()
    return web.json_response(_photo_json(photo), status=201)


async def delete_photo(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        raise web.HTTPUnauthorized(text="login required\n")
    photo_id = _int(request, "id")
    async with db_session(request.app[STATE]) as session:
        photo = await session.get(Photo, photo_id)
        if photo is None:
            raise web.HTTPNotFound(text="no such photo\n")
        if photo.user_id != user:
            raise web.HTTPForbidden(text="not your photo\n")
        await session.delete(photo)
        await session.commit()
    return web.Response(status=204)


@web.middleware
async def pool_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except PoolExhausted:
        return web.Response(
            status=503,
            text="database pool exhausted\n",
            headers={"Retry-After": "1"},
        )


async def demo_stats(request: web.Request) -> web.Response:
    """What the database did since start: the figures of the incident."""
    state = request.app[STATE]
    pool = state.engine.pool
    return web.json_response(
        {
            "photo_reads": state.photo_reads,
            "bytes_read": state.bytes_read,
            "etag": state.etag,
            "etag_reads": state.etag_reads,
            "not_modified": state.not_modified,
            "pool_timeouts": state.pool_timeouts,
            "pool": pool.status(),
        },
        headers={"Cache-Control": "no-store"},
    )


def build_app(
    engine: AsyncEngine, *, db_latency: float = 0.0, etag: bool = False
) -> web.Application:
    app = web.Application(middlewares=[pool_errors], client_max_size=MAX_UPLOAD)
    app[STATE] = DemoState(engine, db_latency, etag)
    app.router.add_get("/", index)
    app.router.add_get("/gallery/{event_id}", gallery)
    app.router.add_get("/api/photo/{id}", get_photo)
    app.router.add_delete("/api/photo/{id}", delete_photo)
    app.router.add_post("/api/photos", upload)
    app.router.add_get("/api/my-photos", my_photos)
    app.router.add_get("/api/events/{id}/photos", event_photos)
    app.router.add_get("/_demo/stats", demo_stats)
    return app


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:8px}"
        ".grid img{width:100%;height:auto;background:#ddd}</style></head>"
        f"<body>{body}</body></html>"
    )
