"""Where an upstream response ends among the bytes read from its connection.

Owns the part of RFC 9112 section 6.3 that keeps a broken app from
desynchronising a pooled connection: a body framed by ``Content-Length`` ends
after that many bytes, a response to ``HEAD`` or with a ``1xx``, ``204`` or
``304`` status at the end of its head. Bytes past that end are not the next
response (a client sends one request at a time on a connection): they are
excess, to be dropped with the connection, while the response itself is
complete and served as declared (as curl and nginx do). Chunked bodies, bodies
read until the connection closes and upgraded connections end where the parser
says: they are not tracked here.

The client protocol (``proxy.upstream``) asks ``cut`` how much of each read the
parser may take, so that the parser never sees more than one head, or more than
the declared body, at a time. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import re
from enum import Enum

# The empty line that ends a head; the response parser also takes a bare LF as a
# line end. A field value never holds an LF, so the first match is the end.
_HEAD_END = re.compile(rb"\n\r?\n")
# Statuses whose response has no body whatever its headers say (RFC 9112 6.3).
_NO_BODY = frozenset({204, 304})
_DIGITS = re.compile(r"[0-9]+")


class Phase(Enum):
    HEAD = "head"  # reading a response head
    HEAD_READ = "head read"  # a whole head was handed over: ``head`` or ``untracked`` next
    BODY = "body"  # reading a body of declared length
    DONE = "done"  # the response is complete: anything more is excess
    UNTRACKED = "untracked"  # the parser finds the end (chunked, until close, upgraded)


class Framing:
    """The framing of the response in progress on one connection."""

    __slots__ = ("_head_request", "_tail", "end", "phase", "remaining")

    def __init__(self) -> None:
        self.phase = Phase.UNTRACKED
        self.remaining = 0
        self.end = ""  # what ended the response, for the log
        self._head_request = False
        self._tail = b""

    def start(self, *, head_request: bool) -> None:
        """A request was sent: its response head comes next."""
        self.phase = Phase.HEAD
        self.remaining = 0
        self.end = ""
        self._head_request = head_request
        self._tail = b""

    def cut(self, data: bytes) -> int:
        """How many leading bytes of ``data`` the parser may take now: the rest of a
        head (then ``head`` or ``untracked`` must be called before the next cut), or
        of a body; 0 once the response is complete, when all of ``data`` is excess."""
        match self.phase:
            case Phase.UNTRACKED:
                return len(data)
            case Phase.DONE:
                return 0
            case Phase.BODY:
                taken = min(self.remaining, len(data))
                self.remaining -= taken
                if not self.remaining:
                    self.phase = Phase.DONE
                return taken
            case Phase.HEAD:
                window = self._tail + data
                found = _HEAD_END.search(window)
                if found is None:
                    self._tail = window[-2:]
                    return len(data)
                self._tail = b""
                self.phase = Phase.HEAD_READ
                return found.end() - (len(window) - len(data))
            case Phase.HEAD_READ:
                raise AssertionError("a head was handed over without its framing")

    def head(self, status: int, *, content_length: str | None, chunked: bool) -> None:
        """The head just handed over was parsed: where does this response end?"""
        if 100 <= status < 200 and status != 101:
            self.phase = Phase.HEAD  # interim: the final response's head follows
        elif status == 101:
            self.phase = Phase.UNTRACKED
        elif self._head_request or status in _NO_BODY:
            self.phase = Phase.DONE
            self.end = "a HEAD request" if self._head_request else f"status {status}"
        elif chunked or content_length is None or not _DIGITS.fullmatch(content_length):
            self.phase = Phase.UNTRACKED  # the parser's to find, or to refuse
        else:
            self.remaining = int(content_length)
            self.phase = Phase.BODY if self.remaining else Phase.DONE
            self.end = f"Content-Length {self.remaining}"

    def untracked(self) -> None:
        """The parser made nothing of the head (it failed, or keeps waiting): leave
        the framing to it."""
        self.phase = Phase.UNTRACKED
