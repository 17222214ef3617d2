"""Several workers' counters as one: what a worker reports to its supervisor, and
the sum the supervisor's ``/stats`` and ``/metrics`` show.

A worker sends its whole ``Stats`` (every counter, every histogram bucket), its
store's ``CacheFigures`` and its shared-tier figures as JSON; the supervisor
rebuilds a ``Stats`` per worker and adds them field by field, histograms bucket
by bucket. The sum is a real ``Stats``: ``Stats.snapshot`` and the metrics
collector render it exactly as they render a single process's, percentiles
included. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.metrics import SharedFigures
from proxy.stats import CacheFigures, Histogram, RouteCounters, Stats, quantile

SHARED_COUNTS = ("hits", "misses", "errors", "skipped")
# The breaker state a merged shared tier shows: the worst of the workers'.
_STATE_ORDER = ("closed", "half-open", "open")


def _histogram_doc(h: Histogram) -> dict[str, Any]:
    return {"counts": list(h.counts), "total": h.total}


def _histogram(doc: Mapping[str, Any]) -> Histogram:
    h = Histogram()
    counts = [int(n) for n in doc["counts"]]
    if len(counts) != len(h.counts):
        raise ValueError("histogram buckets differ")
    h.counts = counts
    h.total = float(doc["total"])
    return h


def stats_document(stats: Stats) -> dict[str, Any]:
    """Every field of ``stats`` as JSON-ready data (``stats_from_document`` reverses it)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, Histogram):
            out[f.name] = _histogram_doc(value)
        elif isinstance(value, RouteCounters):
            out[f.name] = value.as_dict()
        elif isinstance(value, dict):
            out[f.name] = {
                k: _histogram_doc(v) if isinstance(v, Histogram) else v.as_dict()
                for k, v in value.items()
            }
        else:
            out[f.name] = value
    return out


def stats_from_document(doc: Mapping[str, Any]) -> Stats:
    stats = Stats(started_at=float(doc["started_at"]))
    for f in dataclasses.fields(stats):
        if f.name not in doc:
            continue  # a field this side knows and the sender does not: its default
        current, raw = getattr(stats, f.name), doc[f.name]
        value: Any
        if isinstance(current, Histogram):
            value = _histogram(raw)
        elif isinstance(current, RouteCounters):
            value = RouteCounters(**raw)
        elif isinstance(current, dict):
            if f.name == "latency":
                value = {k: _histogram(v) for k, v in raw.items()}
            else:
                value = {k: RouteCounters(**v) for k, v in raw.items()}
        else:
            value = type(current)(raw)
        setattr(stats, f.name, value)
    return stats


def _add_histogram(into: Histogram, other: Histogram) -> None:
    into.counts = [a + b for a, b in zip(into.counts, other.counts, strict=True)]
    into.total += other.total


def _add_counters(into: RouteCounters, other: RouteCounters) -> None:
    into.hits += other.hits
    into.misses += other.misses
    into.stale += other.stale
    into.bypass += other.bypass


# ``Stats`` fields that say how things stand now, not what happened since the
# start: an exited worker's are gone with it (``Retired``).
GAUGES = frozenset({"upstream_in_flight", "upstream_queued"})
# ``CacheFigures`` fields of the same kind: what a store holds now.
HELD = frozenset({"entries", "bytes", "max_bytes"})
# The same in a worker's shadow index (``/stats`` ``shadow.index``).
SHADOW_HELD = frozenset({*HELD, "overhead_bytes", "max_overhead_bytes"})


def add_stats(into: Stats, other: Stats, *, gauges: bool = True) -> None:
    """Add ``other``'s counters, histograms and (unless ``gauges`` is False) gauges
    to ``into`` (``started_at`` stays)."""
    for f in dataclasses.fields(into):
        if f.name == "started_at" or (not gauges and f.name in GAUGES):
            continue
        mine, theirs = getattr(into, f.name), getattr(other, f.name)
        if isinstance(mine, Histogram):
            _add_histogram(mine, theirs)
        elif isinstance(mine, RouteCounters):
            _add_counters(mine, theirs)
        elif isinstance(mine, dict):
            for name, value in theirs.items():
                if name not in mine:
                    mine[name] = Histogram() if isinstance(value, Histogram) else RouteCounters()
                if isinstance(value, Histogram):
                    _add_histogram(mine[name], value)
                else:
                    _add_counters(mine[name], value)
        else:
            setattr(into, f.name, mine + theirs)


def figures_document(figures: CacheFigures) -> dict[str, int]:
    return dataclasses.asdict(figures)


def add_figures(many: Iterable[CacheFigures]) -> CacheFigures:
    """The workers' stores as one: every figure summed (``max_bytes`` is the total budget)."""
    totals = dict.fromkeys((f.name for f in dataclasses.fields(CacheFigures)), 0)
    for figures in many:
        for name in totals:
            totals[name] += getattr(figures, name)
    return CacheFigures(**totals)


def shared_document(state: str, counts: Mapping[str, int], latency: Histogram) -> dict[str, Any]:
    return {"state": state, **{k: counts[k] for k in SHARED_COUNTS}, **_histogram_doc(latency)}


def add_documents(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Documents of numbers (nested mappings of them), summed key by key; a key one
    of them lacks counts as 0 there. ``hit_rate`` is computed again from the sums."""
    total: dict[str, Any] = {}
    for doc in docs:
        for key, value in doc.items():
            if isinstance(value, Mapping):
                total[key] = add_documents([total.get(key, {}), value])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    if "hit_rate" in total:
        lookups = sum(total.get(k, 0) for k in ("hits", "misses", "stale"))
        total["hit_rate"] = round(total.get("hits", 0) / lookups, 4) if lookups else 0.0
    return total


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker's report (``GET /_worker/state`` on its private socket)."""

    pid: int
    stats: Stats
    cache: CacheFigures
    shared: SharedFigures | None
    draining: bool
    # Its ``/stats`` ``storage`` and ``shadow`` sections, as documents.
    storage: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shadow: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rss: int | None = None  # resident bytes; None: unknown (or a worker that did not say)
    policy: str | None = None  # its ``cache.policy`` (None: a worker that did not say)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> WorkerState:
        shared = doc.get("shared")
        return cls(
            pid=int(doc["pid"]),
            stats=stats_from_document(doc["stats"]),
            cache=CacheFigures(**{k: int(v) for k, v in doc["cache"].items()}),
            shared=None
            if shared is None
            else SharedFigures(
                str(shared["state"]),
                {k: int(shared[k]) for k in SHARED_COUNTS},
                _histogram(shared),
            ),
            draining=bool(doc["draining"]),
            storage=dict(doc.get("storage") or {}),
            shadow=dict(doc.get("shadow") or {}),
            rss=None if doc.get("rss") is None else int(doc["rss"]),
            policy=None if doc.get("policy") is None else str(doc["policy"]),
        )


@dataclass(frozen=True, slots=True)
class Merged:
    stats: Stats
    cache: CacheFigures
    shared: SharedFigures | None
    storage: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shadow: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def snapshot(self, now: float) -> dict[str, object]:
        """The ``/stats`` document of a single process, for all workers together."""
        snap = self.stats.snapshot(now=now, cache=self.cache)
        if self.shared is not None:
            snap["shared"] = {
                **shared_summary(self.shared),
                "served": self.stats.shared_hits,
            }
        snap["storage"] = dict(self.storage)
        snap["shadow"] = dict(self.shadow)
        return snap


class Retired:
    """What the workers that exited had counted at their last report: kept so that
    the supervisor's totals never go down when a worker is started again (a
    Prometheus counter that drops reads as a reset). Counters and histograms only;
    what a worker held (entries, bytes, requests in flight) left with it. Counts
    made after a worker's last report are lost with it."""

    def __init__(self) -> None:
        self.stats = Stats(started_at=0.0)
        self.cache = CacheFigures(0, 0, 0, 0, 0, 0)
        self.shared: SharedFigures | None = None
        self.storage: dict[str, Any] = {}
        self.shadow: dict[str, Any] = {}
        self.workers = 0

    def add(self, state: WorkerState) -> None:
        add_stats(self.stats, state.stats, gauges=False)
        counted = {
            f.name: 0 if f.name in HELD else getattr(state.cache, f.name)
            for f in dataclasses.fields(CacheFigures)
        }
        self.cache = add_figures([self.cache, CacheFigures(**counted)])
        if state.shared is not None:
            kept = [f for f in (self.shared, state.shared) if f is not None]
            merged = merge_shared(kept)
            assert merged is not None
            # The state of a tier is what the live workers see, not this one's.
            self.shared = SharedFigures("", merged.counts, merged.latency)
        self.storage = add_documents([self.storage, state.storage])
        index = {k: v for k, v in state.shadow.get("index", {}).items() if k not in SHADOW_HELD}
        counted = {**state.shadow, "index": index} if state.shadow else {}
        self.shadow = add_documents([self.shadow, counted])
        self.workers += 1

    def report(self) -> WorkerState | None:
        """What the exited workers counted, as one more report to merge (None: none exited)."""
        if not self.workers:
            return None
        return WorkerState(
            0,
            self.stats,
            self.cache,
            self.shared,
            draining=False,
            storage=self.storage,
            shadow=self.shadow,
        )


def merge(
    states: Iterable[WorkerState], started_at: float, retired: Retired | None = None
) -> Merged:
    """The workers' reports (and what ``retired`` ones counted) as one; uptime
    counts from ``started_at``."""
    total = Stats(started_at=started_at)
    figures: list[CacheFigures] = []
    shared: list[SharedFigures] = []
    storage: list[Mapping[str, Any]] = []
    shadow: list[Mapping[str, Any]] = []
    past = retired.report() if retired is not None else None
    for state in [*states, *([past] if past is not None else [])]:
        add_stats(total, state.stats)
        figures.append(state.cache)
        if state.shared is not None:
            shared.append(state.shared)
        storage.append(state.storage)
        shadow.append(state.shadow)
    return Merged(
        total,
        add_figures(figures),
        merge_shared(shared),
        add_documents(storage),
        add_documents(shadow),
    )


def total_rss(own: int | None, workers: Iterable[WorkerState | None]) -> int | None:
    """The resident memory of the supervisor (``own``) and of the workers that
    answered, added up: they share the cgroup's limit. None if none is known."""
    known = [r for r in (own, *(s.rss for s in workers if s is not None)) if r is not None]
    return sum(known) if known else None


def merge_shared(many: list[SharedFigures]) -> SharedFigures | None:
    if not many:
        return None
    latency = Histogram()
    counts = dict.fromkeys(SHARED_COUNTS, 0)
    for figures in many:
        _add_histogram(latency, figures.latency)
        for name in SHARED_COUNTS:
            counts[name] += figures.counts[name]
    known = [f.state for f in many if f.state in _STATE_ORDER]
    state = max(known, key=_STATE_ORDER.index) if known else many[0].state
    return SharedFigures(state, counts, latency)


def shared_summary(figures: SharedFigures) -> dict[str, object]:
    """What ``SharedTier.figures`` gives for one process, for the merged tier."""
    h = figures.latency
    p50 = quantile(h.counts, h.bounds, 0.5)
    p99 = quantile(h.counts, h.bounds, 0.99)
    return {
        "state": figures.state,
        **figures.counts,
        "latency_ms_p50": round(p50 * 1000, 2) if p50 is not None else None,
        "latency_ms_p99": round(p99 * 1000, 2) if p99 is not None else None,
    }
