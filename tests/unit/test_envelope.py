"""The shared tier's binary envelope (proxy/envelope.py)."""

from __future__ import annotations

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
