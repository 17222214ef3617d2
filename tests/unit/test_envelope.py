"""The shared tier's binary envelope (proxy/envelope.py)."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from proxy.entry import StoredResponse
from proxy.envelope import VERSION, EnvelopeError, decode, encode

BODY = bytes(range(256)) * 1000  # every byte value: nothing may be decoded as text

ENTRY = StoredResponse(
    key="photo\napp:8000\n/api/photo/1",
    route="photo",
    path="/api/photo/1",
    status=200,
    headers=(("Content-Type", "image/jpeg"), ("X-Note", "café"), ("ETag", '"e"')),
    body=BODY,
    etag='"e"',
    stored_at=100.0,
    fresh_until=400.0,
    stale_until=1000.0,
    initial_age=3.0,
    vary=("accept-language",),
    base_key="photo\napp:8000",
)


def test_round_trip_is_exact_and_keeps_remaining_freshness() -> None:
    data = encode(ENTRY, mono_now=150.0, wall_now=1_700_000_000.0)
    # Another process: another monotonic clock, the same wall clock 10 s later.
    back = decode(data, mono_now=5_000.0, wall_now=1_700_000_010.0)
    assert back.body == BODY and isinstance(back.body, bytes)
    assert back.headers == ENTRY.headers and back.vary == ENTRY.vary
    assert (back.key, back.route, back.path, back.etag, back.base_key) == (
        ENTRY.key, ENTRY.route, ENTRY.path, ENTRY.etag, ENTRY.base_key,
    )  # fmt: skip
    # 250 s of freshness were left when stored; 10 s later, 240 s are.
    assert back.fresh_until - 5_000.0 == pytest.approx(240.0)
    assert back.stale_until - back.fresh_until == pytest.approx(600.0)
    assert back.stored_at == pytest.approx(5_000.0 - 60.0)
    assert back.initial_age == 3.0 and back.status == 200


def test_bytearray_bodies_encode_like_bytes() -> None:
    a = encode(ENTRY, mono_now=0, wall_now=0)
    b = encode(replace(ENTRY, body=bytearray(BODY)), mono_now=0, wall_now=0)
    assert a == b


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"XXX" + d[3:], "not a sidecache envelope"),
        (lambda d: d[:3] + bytes([VERSION + 1]) + d[4:], "envelope version"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"!", "trailing bytes"),
        (lambda d: d[:10], "not a sidecache envelope"),
    ],
)
def test_damaged_envelopes_are_refused(mutate: object, message: str) -> None:
    data = encode(ENTRY, mono_now=0, wall_now=0)
    with pytest.raises(EnvelopeError, match=message):
        decode(mutate(data), mono_now=0, wall_now=0)  # type: ignore[operator]


def test_origin_freshness_and_validators_cross_the_tier() -> None:
    entry = replace(
        ENTRY,
        must_revalidate=True,
        stale_while_revalidate=30.0,
        stale_if_error=600.0,
        origin_etag='W/"v1"',
        last_modified="Sun, 06 Nov 1994 08:49:37 GMT",
        origin_lifetime=True,
    )
    back = decode(encode(entry, mono_now=0, wall_now=0), mono_now=0, wall_now=0)
    assert back == entry
    # Absent validators stay absent (not empty strings), flags stay off.
    plain = decode(encode(ENTRY, mono_now=0, wall_now=0), mono_now=0, wall_now=0)
    assert plain == ENTRY
    assert (plain.origin_etag, plain.last_modified, plain.must_revalidate) == (None, None, False)
    empty = replace(ENTRY, origin_etag="")
    assert decode(encode(empty, mono_now=0, wall_now=0), mono_now=0, wall_now=0) == empty


def _version_1(entry: StoredResponse) -> bytes:
    """An envelope as the previous release wrote it (no origin fields)."""
    parts = [
        struct.pack(
            ">3sBHdddd",
            b"SCE",
            1,
            entry.status,
            entry.stored_at,
            entry.fresh_until,
            entry.stale_until,
            entry.initial_age,
        )
    ]

    def put(data: bytes) -> None:
        parts.append(struct.pack(">I", len(data)) + data)

    for text in (entry.key, entry.route, entry.path, entry.etag, entry.base_key):
        put(text.encode())
    parts.append(struct.pack(">H", len(entry.headers)))
    for name, value in entry.headers:
        put(name.encode("latin-1"))
        put(value.encode("latin-1"))
    parts.append(struct.pack(">H", len(entry.vary)))
    for name in entry.vary:
        put(name.encode())
    put(bytes(entry.body))
    return b"".join(parts)


def test_version_1_envelopes_of_older_replicas_are_still_read() -> None:
    assert VERSION == 2
    back = decode(_version_1(ENTRY), mono_now=0, wall_now=0)
    assert back == ENTRY
