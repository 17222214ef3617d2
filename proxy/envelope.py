"""The shared tier's storage format: a compact, versioned binary envelope.

Owns how a ``StoredResponse`` crosses to the shared tier and back, byte for
byte. Times are converted between this process's monotonic clock (what the
in-process tier uses) and wall-clock time (what replicas share): an entry keeps
its remaining freshness, not a monotonic instant another process cannot read.
Pure: imports neither aiohttp nor asyncio; time is an argument.

Layout (version 2), all integers big-endian::

    b"SCE" version:u8
    status:u16 stored_at:f64 fresh_until:f64 stale_until:f64 initial_age:f64  (wall clock)
    flags:u8 (1: must_revalidate, 2: origin_lifetime)
    stale_while_revalidate:f64 stale_if_error:f64
    then length-prefixed (u32) byte strings: key, route, path, etag, base_key,
    origin_etag, last_modified (length 0xFFFFFFFF: absent),
    headers (u16 count, then name and value pairs), vary (u16 count, names), body

Version 1 (without the flags, the app's stale windows and validators) is still
read, so that replicas of the previous release can share a tier during an upgrade.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from proxy.entry import StoredResponse

MAGIC = b"SCE"
VERSION = 2
_READABLE = (1, 2)
_FIXED = struct.Struct(">3sBHdddd")
_ORIGIN = struct.Struct(">Bdd")
_MUST_REVALIDATE = 1
_ORIGIN_LIFETIME = 2
_ABSENT = 0xFFFFFFFF
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version can read."""


def encode(entry: StoredResponse, *, mono_now: float, wall_now: float) -> bytes:
    shift = wall_now - mono_now  # monotonic instant + shift = wall-clock instant
    parts = [
        _FIXED.pack(
            MAGIC,
            VERSION,
            entry.status,
            entry.stored_at + shift,
            entry.fresh_until + shift,
            entry.stale_until + shift,
            entry.initial_age,
        ),
        _ORIGIN.pack(
            (_MUST_REVALIDATE if entry.must_revalidate else 0)
            | (_ORIGIN_LIFETIME if entry.origin_lifetime else 0),
            entry.stale_while_revalidate,
            entry.stale_if_error,
        ),
    ]
    for text in (entry.key, entry.route, entry.path, entry.etag, entry.base_key):
        _put(parts, text.encode("utf-8", "surrogateescape"))
    for validator in (entry.origin_etag, entry.last_modified):
        if validator is None:
            parts.append(_U32.pack(_ABSENT))
        else:
            _put(parts, validator.encode("latin-1", "replace"))
    parts.append(_U16.pack(len(entry.headers)))
    for name, value in entry.headers:
        _put(parts, name.encode("latin-1"))
        _put(parts, value.encode("latin-1", "replace"))
    parts.append(_U16.pack(len(entry.vary)))
    for name in entry.vary:
        _put(parts, name.encode("ascii"))
    _put(parts, bytes(entry.body) if isinstance(entry.body, bytearray) else entry.body)
    return b"".join(parts)


def _put(parts: list[bytes], data: bytes) -> None:
    parts.append(_U32.pack(len(data)))
    parts.append(data)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.view):
            raise EnvelopeError("envelope is truncated")
        chunk = self.view[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        (value,) = _U16.unpack(self.take(2))
        return int(value)

    def blob(self) -> bytes:
        (length,) = _U32.unpack(self.take(4))
        return bytes(self.take(length))

    def optional(self) -> str | None:
        (length,) = _U32.unpack(self.take(4))
        return None if length == _ABSENT else bytes(self.take(length)).decode("latin-1")

    def texts(self, count: int, encoding: str) -> Iterator[str]:
        for _ in range(count):
            yield self.blob().decode(encoding)


def decode(data: bytes, *, mono_now: float, wall_now: float) -> StoredResponse:
    if len(data) < _FIXED.size or data[:3] != MAGIC:
        raise EnvelopeError("not a sidecache envelope")
    version = data[3]
    if version not in _READABLE:
        raise EnvelopeError(f"envelope version {version} (this sidecache reads {VERSION})")
    r = _Reader(data)
    _, _, status, stored_at, fresh_until, stale_until, initial_age = _FIXED.unpack(
        r.take(_FIXED.size)
    )
    flags, while_revalidate, if_error = 0, 0.0, 0.0
    if version >= 2:
        flags, while_revalidate, if_error = _ORIGIN.unpack(r.take(_ORIGIN.size))
    key, route, path, etag, base_key = (
        r.blob().decode("utf-8", "surrogateescape") for _ in range(5)
    )
    origin_etag = last_modified = None
    if version >= 2:
        origin_etag, last_modified = r.optional(), r.optional()
    count = r.u16()
    headers = tuple((r.blob().decode("latin-1"), r.blob().decode("latin-1")) for _ in range(count))
    vary = tuple(r.texts(r.u16(), "ascii"))
    body = r.blob()
    if r.pos != len(data):
        raise EnvelopeError("trailing bytes after the envelope")
    shift = mono_now - wall_now  # wall-clock instant + shift = monotonic instant
    return StoredResponse(
        key=key,
        route=route,
        path=path,
        status=status,
        headers=headers,
        body=body,
        etag=etag,
        stored_at=stored_at + shift,
        fresh_until=fresh_until + shift,
        stale_until=stale_until + shift,
        initial_age=initial_age,
        vary=vary,
        base_key=base_key,
        must_revalidate=bool(flags & _MUST_REVALIDATE),
        stale_while_revalidate=while_revalidate,
        stale_if_error=if_error,
        origin_etag=origin_etag,
        last_modified=last_modified,
        origin_lifetime=bool(flags & _ORIGIN_LIFETIME),
    )
