"""Single-flight fills: one upstream request per cold key, however many clients ask.

Owns the map from cache key to the fill in progress, the background tasks that
run fills, and the ``Relay`` that hands a fill's body to the client who started
it while it is read. A fill runs in its own task: the client that started it
may go away, and waiters may be cancelled, without disturbing it. Every task is
referenced here and awaited (or cancelled) on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from proxy.entry import Body
from proxy.flow import FillResult, First, Stored
from proxy.keys import loose_path
from proxy.memory import release_memory

if TYPE_CHECKING:
    from proxy.upstream import Interim, InterimSink

log = logging.getLogger(__name__)

# A fill of at least this size, once no fill runs for IDLE_TRIM_DELAY seconds,
# has the allocator give free memory back (proxy/memory.py).
TRIM_AFTER_BYTES = 1024 * 1024
IDLE_TRIM_DELAY = 1.0


class Allowance:
    """What bodies of unknown length (chunked) may keep, together, while nobody
    knows yet whether they can be stored: a crowd of them cannot make the process
    hold ``max_object_bytes`` each. Bytes are counted by the relays that keep them."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit  # None: no limit
        self.used = 0


class Relay:
    """A single-consumer channel for a fill's body.

    While the body may still be stored, every chunk is kept (bounded by
    ``max_object_bytes``, and for bodies of unknown length by the ``Allowance``).
    With a known length (``expect``), chunks are copied into one buffer of that
    size as they arrive and the consumer gets views of it: the stored body is that
    buffer, so a fill holds its body once, not as chunks plus their joined copy,
    and the producer never waits for the consumer: a slow client does not slow
    a fill that others wait for.

    Otherwise the producer waits while more than ``window`` bytes are unread, so
    that a slow client holds at most the window, and the upstream read waits for
    it: once the body cannot be stored (chunks are then dropped as they are
    consumed), and while a body of unknown length is kept for a client nobody else
    waits with (``shared`` off), whose backlog would be left behind, unbounded by
    the window, if the body turned out too large.
    """

    def __init__(self, window: int, allowance: Allowance | None = None) -> None:
        self._window = window
        self._allowance = allowance if allowance is not None else Allowance()
        self._counted = 0  # bytes of ours in the allowance
        self.shared = False  # other clients wait for the result: keep reading ahead
        self.stalled = asyncio.Event()  # set while the producer waits for the consumer
        self._buf: bytearray | None = None
        self._chunks: list[bytes | memoryview] = []
        self._first = 0  # absolute index of _chunks[0]
        self._read = 0  # absolute index of the next chunk to hand out
        self._unread = 0
        self._size = 0
        self._keep = True
        self._done = False
        self._error: BaseException | None = None
        self._data = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.consumer_gone = False
        self._interim: InterimSink | None = None

    @property
    def size(self) -> int:
        return self._size

    def interim_to(self, sink: InterimSink) -> None:
        """Where the fill's interim responses go, before its head: the consumer's
        client, until the consumer is gone."""
        self._interim = sink

    async def interim(self, interim: Interim) -> None:
        """An interim response of the app (``Upstream.request``): to the consumer's
        client, if it still waits; never kept, never shared."""
        if self._interim is not None:
            await self._interim(interim)

    def expect(self, length: int | None) -> None:
        """The body's announced length, known before its first byte: size the buffer."""
        if length and self._keep and not self._size:
            self._buf = bytearray(length)

    @property
    def keeping(self) -> bool:
        return self._keep

    @property
    def unread(self) -> int:
        return self._unread

    async def put(self, chunk: bytes) -> None:
        buf, start = self._buf, self._size
        if buf is not None and self._keep and start + len(chunk) <= len(buf):
            buf[start : start + len(chunk)] = chunk
            self._chunks.append(memoryview(buf)[start : start + len(chunk)])
        else:
            self._chunks.append(chunk)
            if self._keep:
                self._counted += len(chunk)
                self._allowance.used += len(chunk)
        self._unread += len(chunk)
        self._size += len(chunk)
        self._data.set()
        while self._unread > self._window and self._must_wait():
            self._room.clear()
            self.stalled.set()
            await self._room.wait()
        self.stalled.clear()

    def _must_wait(self) -> bool:
        if self.consumer_gone:
            return False
        return not self._keep or (self._buf is None and not self.shared)

    def fits(self, more: int) -> bool:
        """Whether ``more`` bytes may still be kept: always with a sized buffer; for
        a body of unknown length, within the allowance shared by all of them."""
        limit = self._allowance.limit
        return self._buf is not None or limit is None or self._allowance.used + more <= limit

    def share(self) -> None:
        """Another client waits for this fill: read ahead of a slow first client."""
        self.shared = True
        self._room.set()

    def _release(self) -> None:
        self._allowance.used -= self._counted
        self._counted = 0

    def stop_keeping(self) -> None:
        """From now on the body will not be stored: release what was consumed."""
        self._keep = False
        self._buf = None
        self._release()
        if self.consumer_gone:
            self._chunks.clear()
            self._first = self._read = 0
        else:
            self._trim()

    def body(self) -> Body:
        """The whole body (only while keeping): the buffer itself when it was sized."""
        assert self._keep and self._first == 0
        if self._buf is not None and self._size == len(self._buf):
            return self._buf
        return b"".join(self._chunks)

    def finish(self, error: BaseException | None = None) -> None:
        self._release()  # stored or not, it is no longer a fill's to keep
        self._done = True
        self._error = error
        self._data.set()

    def abandon(self) -> None:
        """The consumer will read no more."""
        self.consumer_gone = True
        self._interim = None  # nor hear of interim responses
        self._room.set()
        if not self._keep:
            self._chunks.clear()
            self._first = self._read = 0

    async def next_chunk(self) -> bytes | memoryview | None:
        """The next chunk, None at the end; raises the producer's error."""
        while True:
            index = self._read - self._first
            if index < len(self._chunks):
                chunk = self._chunks[index]
                self._read += 1
                self._unread -= len(chunk)
                if not self._keep:
                    self._trim()
                self._room.set()
                return chunk
            if self._error is not None:
                raise self._error
            if self._done:
                return None
            self._data.clear()
            await self._data.wait()

    def _trim(self) -> None:
        consumed = self._read - self._first
        if consumed:
            del self._chunks[:consumed]
            self._first = self._read


class Fill:
    """One upstream fetch in progress for one key (of ``route``, at ``path``).

    ``head`` is what its first client hears first (``flow.First``): the app's
    response head, whose body follows on ``relay``, or an entry with no body to
    stream; ``result`` what every waiter gets (``flow.FillResult``)."""

    def __init__(
        self,
        key: str,
        window: int,
        route: str,
        path: str,
        allowance: Allowance | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.route = route
        self.path = path
        self.head: asyncio.Future[First] = loop.create_future()
        self.result: asyncio.Future[FillResult] = loop.create_future()
        self.relay = Relay(window, allowance)
        self.waiters = 0
        self._joined = asyncio.Event()
        # Nobody may be left waiting on a future whose exception nobody retrieves.
        self.head.add_done_callback(_consume)
        self.result.add_done_callback(_consume)

    def join(self) -> None:
        """Count one more client waiting for this fill."""
        self.waiters += 1
        self.relay.share()
        self._joined.set()

    async def wait_for_waiters(self, count: int) -> None:
        """Return once ``count`` clients wait on this fill (an observation point)."""
        while self.waiters < count:
            self._joined.clear()
            await self._joined.wait()

    def set_head(self, head: First) -> None:
        if not self.head.done():
            self.head.set_result(head)

    def resolve(self, result: FillResult) -> None:
        if not self.result.done():
            self.result.set_result(result)

    def settle(self, stored: Stored) -> None:
        """Done with an entry and no body to stream (found in the shared tier, or
        refreshed by a 304): every client is answered from it."""
        self.set_head(stored)
        self.resolve(stored)
        self.relay.finish()

    def fail(self, error: BaseException) -> None:
        for fut in (self.head, self.result):
            if not fut.done():
                fut.set_exception(error)
        self.relay.finish(error)


async def _release_memory() -> None:
    await asyncio.to_thread(release_memory)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Coalescer:
    """The single-flight map and the tasks that run fills."""

    def __init__(self) -> None:
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set from the config (cache.max_bytes) by the filler.
        self.allowance = Allowance()
        self._trim: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._fills)

    def get(self, key: str) -> Fill | None:
        return self._fills.get(key)

    def in_progress(self) -> list[Fill]:
        return list(self._fills.values())

    def start(
        self,
        key: str,
        window: int,
        run: Callable[[Fill], Coroutine[Any, Any, None]],
        *,
        route: str,
        path: str,
    ) -> Fill:
        """Start a fill for ``key``; ``run`` does the fetch and resolves the fill.
        ``route`` and ``path`` name what a purge must detach it by."""
        assert key not in self._fills
        fill = Fill(key, window, route, path, self.allowance)
        self._fills[key] = fill
        task = asyncio.get_running_loop().create_task(self._drive(fill, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def forget(self, fill: Fill) -> None:
        """Later requests for its key start a new fill (this one will not be stored)."""
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def detach(self, kind: str, value: str | None) -> int:
        """A purge happened (``kind`` path, route or all): fills that began before it
        may carry what it removed, so later requests start new ones. Clients already
        waiting keep theirs (and the store refuses its result, see ``purge_epoch``).
        A path purge matches as the store does: by loose form (``keys.loose_path``)."""
        loose = loose_path(value) if kind == "path" and value is not None else None
        doomed = [
            fill
            for fill in self._fills.values()
            if kind == "all"
            or (loose is not None and loose_path(fill.path) == loose)
            or (kind == "route" and fill.route == value)
        ]
        for fill in doomed:
            del self._fills[fill.key]
        if doomed:
            log.debug("purge (%s %s) detached %d fills in progress", kind, value, len(doomed))
        return len(doomed)

    async def _drive(self, fill: Fill, run: Callable[[Fill], Coroutine[Any, Any, None]]) -> None:
        try:
            await run(fill)
        except asyncio.CancelledError:
            fill.fail(ConnectionAbortedError("fill cancelled at shutdown"))
            raise
        except BaseException as exc:
            log.exception("cache fill for %r failed unexpectedly", fill.key)
            fill.fail(exc)
        finally:
            if self._fills.get(fill.key) is fill:
                del self._fills[fill.key]
            if not fill.result.done():
                fill.fail(RuntimeError("fill ended without a result"))
            if fill.relay.size >= TRIM_AFTER_BYTES:
                self._trim_when_idle()

    def _trim_when_idle(self) -> None:
        """Give freed memory back to the system once no fill has run for a while."""
        if self._trim is not None:
            self._trim.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if self._tasks:  # still busy: look again later
                self._trim = loop.call_later(IDLE_TRIM_DELAY, fire)
                return
            self._trim = None
            # Off the event loop: trimming a large heap takes milliseconds.
            task = loop.create_task(_release_memory())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._trim = loop.call_later(IDLE_TRIM_DELAY, fire)

    async def close(self, grace: float) -> None:
        """Let running fills finish for up to ``grace`` seconds, then cancel them."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
