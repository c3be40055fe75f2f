"""The typed rows and summaries of a benchmark run, and how results.json spells them.

Each is built in one place from its samples; `as_json` (field order = key order) is the only
way into results.json, so the document's shape is these declarations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.explain import Explained
from benchmarks.monitor import Window
from benchmarks.stats import mean, ms, percentile, rounded


@dataclass
class WriteSample:
    api_s: float
    visible_s: float
    window: Window


@dataclass
class ReadSummary:
    """Page reads: latency percentiles, and what `explain` of a sample of them examined."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    keys_examined_per_read: float | None
    docs_examined_per_read: float | None
    round_trips_per_read: float | None
    plan: str | None  # the most common winning plan of the sample
    blocking_sort: bool
    plans: dict[str, int]
    reads: int
    explained: int
    # Documents the explained pages' filters select, per read (None: not counted): the bound of
    # `keys_examined_per_read` where the plan sorts in memory (tests/test_benchmarks.py).
    keys_matching_per_read: float | None = None

    @classmethod
    def of(
        cls, read_s: list[float], round_trips: list[int], explained: list[Explained]
    ) -> ReadSummary:
        plans = Counter(e.plan for e in explained)
        matching = [e.matching for e in explained if e.matching is not None]
        return cls(
            p50_ms=ms(percentile(read_s, 50)),
            p95_ms=ms(percentile(read_s, 95)),
            p99_ms=ms(percentile(read_s, 99)),
            keys_examined_per_read=rounded(mean([e.keys_examined for e in explained])),
            docs_examined_per_read=rounded(mean([e.docs_examined for e in explained])),
            round_trips_per_read=rounded(mean([float(r) for r in round_trips])),
            plan=plans.most_common(1)[0][0] if plans else None,
            blocking_sort=any(e.blocking_sort for e in explained),
            plans=dict(plans),
            reads=len(read_s),
            explained=len(explained),
            keys_matching_per_read=(
                rounded(mean([float(m) for m in matching]))
                if explained and len(matching) == len(explained)
                else None
            ),
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RefreshSummary:
    p50_ms: float | None
    p95_ms: float | None
    round_trips_per_read: float | None


@dataclass
class StrategyReadSummary(ReadSummary):
    """A strategy's first-page reads, plus queries of its page collection and refreshes."""

    queries_per_read: float | None = None
    refresh: RefreshSummary | None = None


@dataclass
class OpSummary:
    """One kind of write (post, friend, unfriend, delete): the API part and until visible."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    visible_p50_ms: float | None
    visible_p99_ms: float | None
    docs: float | None
    bytes: float | None
    docs_by_collection: dict[str, float]

    @classmethod
    def of(cls, samples: list[WriteSample]) -> OpSummary:
        by_coll: Counter[str] = Counter()
        for s in samples:
            by_coll.update(s.window.docs_by_collection)
        n = len(samples)
        return cls(
            count=n,
            p50_ms=ms(percentile([s.api_s for s in samples], 50)),
            p99_ms=ms(percentile([s.api_s for s in samples], 99)),
            visible_p50_ms=ms(percentile([s.visible_s for s in samples], 50)),
            visible_p99_ms=ms(percentile([s.visible_s for s in samples], 99)),
            docs=rounded(mean([s.window.docs_written for s in samples])),
            bytes=rounded(mean([s.window.bytes_written for s in samples]), 0),
            docs_by_collection=(
                {k: round(v / n, 2) for k, v in sorted(by_coll.items())} if n else {}
            ),
        )


@dataclass
class WriteSummary:
    """The posts of the mix. Documents and bytes per post include what the posts deferred to a
    later pass (inbox_buckets' fold of its loose entries, shared over the mix's posts), also
    shown on its own (`fold_*`, None where nothing is deferred). Bytes are what the client
    sends (benchmarks/monitor.py); `fold_rewrite_bytes_per_post` is what the server rewrote for
    the fold (whole documents), shown beside them and counted in neither."""

    p50_ms: float | None
    p99_ms: float | None
    visible_p50_ms: float | None
    visible_p99_ms: float | None
    docs_written_per_post: float | None
    bytes_written_per_post: float | None
    docs_by_collection: dict[str, float]
    posts: int
    fold_docs_per_post: float | None = None
    fold_bytes_per_post: float | None = None
    # What the server rewrote for the fold (the documents it changed, whole; bytes written is
    # what the client sent): benchmarks/rewrite.py. Not part of bytes_written_per_post.
    fold_rewrite_bytes_per_post: float | None = None

    @classmethod
    def of(cls, post: OpSummary, *, fold: Window | None = None) -> WriteSummary:
        n = post.count
        fold_docs = fold.docs_written / n if fold is not None and n else None
        fold_bytes = fold.bytes_written / n if fold is not None and n else None
        rewrite = fold.bytes_rewritten if fold is not None else None
        fold_rewrite = rewrite / n if rewrite is not None and n else None
        by_coll = dict(post.docs_by_collection)
        if fold is not None and n:
            for coll, docs in fold.docs_by_collection.items():
                by_coll[coll] = round(by_coll.get(coll, 0.0) + docs / n, 2)
        return cls(
            p50_ms=post.p50_ms,
            p99_ms=post.p99_ms,
            visible_p50_ms=post.visible_p50_ms,
            visible_p99_ms=post.visible_p99_ms,
            docs_written_per_post=_plus(post.docs, fold_docs, 2),
            bytes_written_per_post=_plus(post.bytes, fold_bytes, 0),
            docs_by_collection=by_coll,
            posts=n,
            fold_docs_per_post=rounded(fold_docs) if fold_docs is not None else None,
            fold_bytes_per_post=rounded(fold_bytes, 0) if fold_bytes is not None else None,
            fold_rewrite_bytes_per_post=(
                rounded(fold_rewrite, 0) if fold_rewrite is not None else None
            ),
        )


def _plus(a: float | None, b: float | None, digits: int) -> float | None:
    return a if b is None or a is None else rounded(a + b, digits)


@dataclass
class ReconcileSummary:
    """Friendship changes and deletes, with the worker's reconciliation."""

    docs_per_friend: float | None
    docs_per_unfriend: float | None
    docs_per_delete: float | None
    operations: dict[str, OpSummary]


@dataclass
class CollectionStorage:
    count: int
    data_bytes: int
    index_bytes: int


@dataclass
class Storage:
    data_bytes: int
    index_bytes: int
    collections: dict[str, CollectionStorage] = field(default_factory=dict)


@dataclass
class StrategySummary:
    read: StrategyReadSummary
    write: WriteSummary
    reconcile: ReconcileSummary
    storage: Storage

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScalingRow:
    """One level of the friend-count sweep for one strategy (or the naive baseline, which
    has no keys-matching bound and no writes)."""

    strategy: str
    friends: int
    read_keys_examined: int
    read_keys_matching: int | None  # None: not measured (left out of results.json)
    read_docs_examined: int
    read_plan: str
    read_blocking_sort: bool
    read_round_trips: float | None
    read_queries: float | None
    read_p50_ms: float | None
    write_docs: float | None = None
    write_bytes: float | None = None
    write_p50_ms: float | None = None
    write_visible_p50_ms: float | None = None
    # The floor of the same fan-out, each post paired with one raw insert_many right after it
    # (the median); None: the run's floor rate stands in (benchmarks.runner.add_floor_ratios).
    write_floor_ms: float | None = None

    @classmethod
    def of(
        cls,
        strategy: str,
        friends: int,
        ex: Explained,
        reads: Sequence[tuple[float, Window]],
        page_collection: str,
        *,
        matching: int | None = None,
        posts: Sequence[WriteSample] = (),
    ) -> ScalingRow:
        """The row of `reads` (seconds, window) of one page and `posts` (none: no write figures)
        by a user with `friends` friends; `ex` is the page query's explain."""
        return cls(
            strategy=strategy,
            friends=friends,
            read_keys_examined=ex.keys_examined,
            read_keys_matching=matching,
            read_docs_examined=ex.docs_examined,
            read_plan=ex.plan,
            read_blocking_sort=ex.blocking_sort,
            read_round_trips=rounded(mean([float(w.round_trips) for _, w in reads])),
            read_queries=rounded(mean([float(w.queries(page_collection)) for _, w in reads])),
            read_p50_ms=ms(percentile([s for s, _ in reads], 50)),
            write_docs=rounded(mean([p.window.docs_written for p in posts])),
            write_bytes=rounded(mean([p.window.bytes_written for p in posts]), 0),
            write_p50_ms=ms(percentile([p.api_s for p in posts], 50)),
            write_visible_p50_ms=ms(percentile([p.visible_s for p in posts], 50)),
        )

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.read_keys_matching is None:
            del out["read_keys_matching"]
        return out
