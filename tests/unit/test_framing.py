"""Where an upstream response ends (proxy/framing.py)."""

from __future__ import annotations

import re

import pytest

from proxy.framing import Framing, Phase


def parse_head(head: bytes) -> tuple[int, str | None, bool]:
    """What the response parser would report of a head (test stand-in)."""
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"\ncontent-length: *([^\r\n]*)", head, re.IGNORECASE)
    chunked = re.search(rb"\ntransfer-encoding: *chunked", head, re.IGNORECASE) is not None
    return status, length.group(1).decode() if length else None, chunked


def feed(reads: list[bytes], *, head_request: bool = False) -> tuple[list[bytes], bytes, str]:
    """Drive a Framing as the client protocol does: the parts handed to the parser,
    the excess, and what ended the response."""
    framing = Framing()
    framing.start(head_request=head_request)
    parts: list[bytes] = []
    head = b""
    excess = b""
    for data in reads:
        while data:
            taken = framing.cut(data)
            if not taken:
                excess += data
                break
            part, data = data[:taken], data[taken:]
            parts.append(part)
            if framing.phase in (Phase.HEAD, Phase.HEAD_READ):
                head += part
            if framing.phase is Phase.HEAD_READ:
                status, length, chunked = parse_head(head)
                framing.head(status, content_length=length, chunked=chunked)
                head = b""
    return parts, excess, framing.end


H200 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
H103 = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("reads", "head_request", "parts", "excess", "end"),
    [
        # Exact: nothing left over.
        ([H200 + b"01234"], False, [H200, b"01234"], b"", "Content-Length 5"),
        # Longer than declared, in one read or in a later one.
        ([H200 + b"0123456789"], False, [H200, b"01234"], b"56789", "Content-Length 5"),
        ([H200 + b"012", b"3456", b"789"], False, [H200, b"012", b"34"], b"56789", ""),
        # The head split across reads, its end too (CR LF | CR LF).
        ([H200[:-3], H200[-3:] + b"01234!"], False, [H200[:-3], H200[-3:], b"01234"], b"!", ""),
        ([H200[:-1], b"\n01234"], False, [H200[:-1], b"\n", b"01234"], b"", ""),
        # Bare LF line ends, which the parser takes too.
        ([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nokX"], False, None, b"X", ""),
        # Interim responses: the final head follows, in the same read or not.
        ([H103 + H200 + b"01234"], False, [H103, H200, b"01234"], b"", ""),
        ([H103, H103 + H200 + b"01234xy"], False, [H103, H103, H200, b"01234"], b"xy", ""),
        # No body whatever the headers say: HEAD, 204, 304, Content-Length 0.
        ([H200 + b"01234"], True, [H200], b"01234", "a HEAD request"),
        ([b"HTTP/1.1 204 No Content\r\n\r\nxx"], False, None, b"xx", "status 204"),
        ([b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\nx"], False, None, b"x", ""),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nx"], False, None, b"x", ""),
        # Not tracked: the parser finds the end (or refuses the response).
        ([CHUNKED + b"5\r\n01234\r\n0\r\n\r\nxx"], False, None, b"", ""),
        ([b"HTTP/1.1 200 OK\r\n\r\nuntil close"], False, None, b"", ""),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n0123456"], False, None, b"", ""),
        ([b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\nframes"], False, None, b"", ""),
    ],
)
def test_cut(
    reads: list[bytes], head_request: bool, parts: list[bytes] | None, excess: bytes, end: str
) -> None:
    got_parts, got_excess, got_end = feed(reads, head_request=head_request)
    if parts is not None:
        assert got_parts == parts
    assert b"".join(got_parts) + got_excess == b"".join(reads)
    assert got_excess == excess
    if end:
        assert got_end == end


def test_excess_on_an_idle_connection_and_a_new_response_after_it() -> None:
    framing = Framing()
    framing.start(head_request=False)
    assert framing.cut(H200 + b"01234") == len(H200)
    framing.head(200, content_length="5", chunked=False)
    assert framing.cut(b"01234") == 5
    assert framing.phase is Phase.DONE
    assert framing.cut(b"late") == 0  # the pooled connection must go
    framing.start(head_request=False)  # a new request on a connection kept
    assert framing.cut(H200) == len(H200)


def test_a_head_the_parser_made_nothing_of_is_left_to_it() -> None:
    framing = Framing()
    framing.start(head_request=False)
    assert framing.cut(b"\r\n\r\nHTTP/1.1 200 OK\r\n") == 4
    framing.untracked()
    assert framing.cut(b"anything") == len(b"anything")


def test_before_any_request_nothing_is_tracked() -> None:
    assert Framing().cut(b"HTTP/1.1 200 OK\r\n") == len(b"HTTP/1.1 200 OK\r\n")
