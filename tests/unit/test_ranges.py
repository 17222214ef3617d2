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


DATE = "Tue, 24 Nov 2026 12:00:00 GMT"  # two hours after LM


# RFC 9111 section 4.3.2: without a Last-Modified, If-Modified-Since is evaluated
# against the stored Date (``date``: the caller passes the time it stored the
# entry when there is none).
@pytest.mark.parametrize(
    ("ims", "last_modified", "date", "expected"),
    [
        ("Tue, 24 Nov 2026 12:00:00 GMT", None, DATE, True),
        ("Tue, 24 Nov 2026 13:00:00 GMT", None, DATE, True),
        ("Tue, 24 Nov 2026 11:59:59 GMT", None, DATE, False),
        ("Tuesday, 24-Nov-26 12:00:00 GMT", None, DATE, True),  # RFC 850
        ("Tue Nov 24 12:00:00 2026", None, DATE, True),  # asctime
        ("Tue, 24 Nov 2026 12:00:00 GMT", None, None, False),
        ("Tue, 24 Nov 2026 12:00:00 GMT", None, "foo", False),
        ("not a date", None, DATE, False),
        (None, None, DATE, False),
        # A valid Last-Modified is the one compared; the Date only stands in.
        ("Tue, 24 Nov 2026 11:00:00 GMT", LM, DATE, True),
        ("Tue, 24 Nov 2026 09:00:00 GMT", LM, DATE, False),
        ("Tue, 24 Nov 2026 12:00:00 GMT", "yesterday", DATE, True),
        ("Tue, 24 Nov 2026 11:00:00 GMT", "yesterday", DATE, False),
        # Not an HTTP-date (RFC 9110 section 13.1.3): ignored.
        ("Tue, 24 Nov 2026 12:00:00 +0000", None, DATE, False),
        ("Tue, 24 Nov 2026 12:00:00", None, DATE, False),
    ],
)
def test_if_modified_since_without_last_modified_uses_the_date(
    ims: str | None, last_modified: str | None, date: str | None, expected: bool
) -> None:
    assert (
        not_modified(
            if_none_match=None,
            if_modified_since=ims,
            etag=ETAG,
            last_modified=last_modified,
            date=date,
        )
        is expected
    )
    # If-None-Match still wins.
    assert not not_modified(
        if_none_match='"zzz"', if_modified_since=ims, etag=ETAG, last_modified=None, date=date
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
