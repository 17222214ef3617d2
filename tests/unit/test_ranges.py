"""Conditional and range answers from a stored entry (proxy/ranges.py)."""

from __future__ import annotations

import pytest

from proxy.ranges import Partial, Unsatisfiable, answer_range, not_modified, precondition_failed

ETAG = '"abc"'
LM = "Tue, 24 Nov 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    ("inm", "ims", "last_modified", "expected"),
    [
        ('"abc"', None, None, True),
        ('W/"abc"', None, None, True),
        ('"zzz"', None, None, False),
        ('"zzz"', "Tue, 24 Nov 2026 11:00:00 GMT", LM, False),  # If-None-Match wins
        (None, "Tue, 24 Nov 2026 10:00:00 GMT", LM, True),
        (None, "Tue, 24 Nov 2026 11:00:00 GMT", LM, True),
        (None, "Tue, 24 Nov 2026 09:59:59 GMT", LM, False),
        (None, "Tue, 24 Nov 2026 11:00:00 GMT", None, False),  # no validator, no 304
        (None, "not a date", LM, False),
        (None, None, LM, False),
    ],
)
def test_not_modified(
    inm: str | None, ims: str | None, last_modified: str | None, expected: bool
) -> None:
    assert (
        not_modified(
            if_none_match=inm, if_modified_since=ims, etag=ETAG, last_modified=last_modified
        )
        is expected
    )


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, Partial(0, 9)),
        ("bytes=90-", 100, Partial(90, 99)),
        ("bytes=90-200", 100, Partial(90, 99)),
        ("bytes=-10", 100, Partial(90, 99)),
        ("bytes=-200", 100, Partial(0, 99)),
        ("bytes=99-99", 100, Partial(99, 99)),
        ("bytes=100-", 100, Unsatisfiable()),
        ("bytes=-0", 100, Unsatisfiable()),
        ("bytes=0-", 0, Unsatisfiable()),
        ("bytes=5-1", 100, None),  # invalid: ignored
        ("bytes=0-1,5-9", 100, None),  # several ranges: the whole body
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
        ("bytes 0-9", 100, None),
    ],
)
def test_answer_range(header: str | None, size: int, expected: object) -> None:
    assert answer_range(header, size) == expected


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [('"abc"', Partial(0, 9)), ('"old"', None), ('W/"abc"', None), (LM, None)],
)
def test_if_range_needs_this_strong_etag(if_range: str, expected: object) -> None:
    assert answer_range("bytes=0-9", 100, if_range=if_range, etag=ETAG) == expected


@pytest.mark.parametrize(
    ("im", "ius", "etag", "last_modified", "failed"),
    [
        (None, None, ETAG, LM, False),
        ('"abc"', None, ETAG, LM, False),
        ('"x", "abc"', None, ETAG, LM, False),
        ("*", None, ETAG, LM, False),
        ('"zzz"', None, ETAG, LM, True),
        ('W/"abc"', None, ETAG, LM, True),  # strong comparison
        ('"abc"', None, 'W/"abc"', LM, True),
        ('"abc"', "Tue, 24 Nov 2026 09:00:00 GMT", ETAG, LM, False),  # If-Match wins
        (None, "Tue, 24 Nov 2026 10:00:00 GMT", ETAG, LM, False),
        (None, "Tue, 24 Nov 2026 11:00:00 GMT", ETAG, LM, False),
        (None, "Tue, 24 Nov 2026 09:59:59 GMT", ETAG, LM, True),
        (None, "Tue, 24 Nov 2026 09:00:00 GMT", ETAG, None, False),  # no date: ignored
        (None, "not a date", ETAG, LM, False),
    ],
)
def test_precondition_failed(
    im: str | None, ius: str | None, etag: str, last_modified: str | None, failed: bool
) -> None:
    assert (
        precondition_failed(
            if_match=im, if_unmodified_since=ius, etag=etag, last_modified=last_modified
        )
        is failed
    )
