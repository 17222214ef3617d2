"""The stored response: what the cache keeps for one key.

Owns the frozen value shared by the LRU, the store adapter, the policy and the
handler. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[str, str], ...]
# A stored body: bytes, or the bytearray a fill of known length was read into
# (never modified once stored; keeping it avoids a copy of every large body).
Body = bytes | bytearray

# Fixed cost charged to every entry on top of its body, key, path and header
# bytes: the objects that hold them (the dataclass, the strings' and tuples' own
# headers, the prepared head of a hit) and the store's (the policy's node, map
# slots and heap record, the path and route indexes). Measured with tracemalloc
# on CPython 3.11 under every policy (tests/unit/test_entry_overhead.py: the
# most costly, gdsf, takes about 590 bytes more than the 837 charged before)
# and rounded up, so the budget errs on the safe side.
ENTRY_OVERHEAD = 1152
# The prepared head of a hit beyond its header lines: the list holding it, the
# bytes object, the status line and Content-Length.
WIRE_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One cached upstream response. Times are ``time.monotonic()`` seconds."""

    key: str
    route: str
    path: str  # normalised path without the query: what a purge by path names
    status: int
    headers: Headers  # end-to-end headers as stored (no hop-by-hop, no framing)
    body: Body
    etag: str
    stored_at: float
    fresh_until: float
    stale_until: float  # after this instant the entry is useless and may be dropped
    # How old the response was when stored: its Age header, or on ``origin`` routes
    # the corrected initial age (RFC 9111 section 4.2.3). Age = this + time stored.
    initial_age: float = 0.0
    # Request headers the upstream's Vary names (lower-case, sorted): the entry is
    # one variant, stored under ``variant_key(base_key, vary, values)``.
    vary: tuple[str, ...] = ()
    base_key: str = ""
    wall_date: str = ""  # the upstream's Date header (HTTP-date), kept for clients
    # RFC 9111: the app forbids serving this entry stale (``must-revalidate``,
    # ``proxy-revalidate``, ``s-maxage``, ``no-cache``): no stale window applies.
    must_revalidate: bool = False
    # The app's own stale windows (RFC 5861), seconds; they extend the route's.
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    # The validators the app sent, as sent: what a conditional refresh asks with
    # (``etag`` above may be one computed by sidecache, which the app never knew).
    origin_etag: str | None = None
    last_modified: str | None = None
    # ``fresh_until`` was read from the app's headers (``freshness: origin``), not
    # given by the route's ``ttl``: a reload that changes the ttl leaves it alone.
    origin_lifetime: bool = False
    # The prepared head of a plain hit, ``[route, bytes]`` (``hitwire.wire_head``):
    # filled on the first hit, never copied by ``dataclasses.replace``.
    wire: list[object] = field(default_factory=list, init=False, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes charged against the cache budget: key, body, headers and overhead."""
        return (
            ENTRY_OVERHEAD
            + len(self.key)
            + len(self.path)
            + len(self.body)
            + len(self.etag)
            # Each header twice: as stored, and in the prepared head of a hit
            # (``wire``, with ": " and CRLF), which also holds the status line.
            + WIRE_OVERHEAD
            + sum(2 * (len(name) + len(value)) + 4 for name, value in self.headers)
        )
