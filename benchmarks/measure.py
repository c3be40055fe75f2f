"""Measuring one strategy on its loaded database: the mixed workload (reads, posts, deletes,
friend and unfriend, each write followed by a worker drain), `explain` of page queries, storage,
and the friend-count sweep. Every operation goes through the domain functions the API calls."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from bson import ObjectId

from app.domain import friends, statuses
from app.domain.users import Account, by_id
from app.storage.models import utcnow
from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.chain import HEAD_S, MAX_ID
from benchmarks.baselines import raw_insert_many
from benchmarks.config import PAGE_LIMIT, SWEEP_BUDGET_S, RunConfig
from benchmarks.explain import Explained, explain_page
from benchmarks.loader import StrategyDb
from benchmarks.monitor import Window
from benchmarks.results import (
    CollectionStorage,
    OpSummary,
    ReadSummary,
    ReconcileSummary,
    RefreshSummary,
    ScalingRow,
    Storage,
    StrategyReadSummary,
    StrategySummary,
    WriteSample,
    WriteSummary,
)
from benchmarks.rewrite import rewritten, sizes, updated_ids
from benchmarks.stats import Stopwatch, mean, ms, percentile, rounded
from benchmarks.workload import Op, Workload
from fanout.fold import FOLD_AGE_S, fold_due
from fanout.worker import Worker

# First-page reads of the mix that are also explained: explain re-runs the query, so this bounds
# the extra time while still covering readers of many friend counts.
EXPLAIN_SAMPLE = 40

Tick = Callable[[int], None]
T = TypeVar("T")


@dataclass
class Samples:
    read_s: list[float] = field(default_factory=list)
    read_round_trips: list[int] = field(default_factory=list)
    read_queries: list[int] = field(default_factory=list)
    refresh_s: list[float] = field(default_factory=list)
    refresh_round_trips: list[int] = field(default_factory=list)
    explained: list[Explained] = field(default_factory=list)
    writes: dict[str, list[WriteSample]] = field(default_factory=dict)
    # Every read's counting window, for `--shards` (benchmarks.shards routes their commands).
    read_windows: list[Window] = field(default_factory=list)
    refresh_windows: list[Window] = field(default_factory=list)
    # What folding the mix's loose entries wrote (inbox_buckets; None for the others): the
    # posts' deferred part, counted in their documents and bytes per post.
    fold_window: Window | None = None


class StrategyBench:
    def __init__(self, sdb: StrategyDb, work: Workload, config: RunConfig) -> None:
        self.sdb = sdb
        self.ctx = sdb.ctx
        self.strategy = sdb.ctx.strategy
        self.work = work
        self.config = config
        self.worker = Worker(sdb.ctx, name=f"bench-{self.strategy.name}")
        self._users: dict[int, Account] = {}
        self._newest: dict[int, ObjectId] = {}
        # Per sweep level: the windows of its reads and of its posts (for `--shards`).
        self.sweep_windows: dict[int, tuple[list[Window], list[Window]]] = {}

    async def user(self, u: int) -> Account:
        """The user, as the API's authentication would have loaded it (not timed)."""
        if u not in self._users:
            found = await by_id(self.ctx.store, self.work.user_ids[u])
            assert found is not None, self.work.handles[u]
            self._users[u] = found
        return self._users[u]

    # -- reads -----------------------------------------------------------------------------------
    async def read_page(self, u: int, *, after: ObjectId | None = None) -> tuple[float, Window]:
        uid = self.work.user_ids[u]
        with self.sdb.counter.window() as w, Stopwatch() as sw:
            page = await self.strategy.read(uid, limit=PAGE_LIMIT, after=after)
        if page.items:
            self._newest[u] = page.items[0].id
        return sw.seconds, w

    async def explain(self, u: int) -> Explained:
        """The first page's explain, with the documents its filter selects (`matching`)."""
        query = await self.strategy.first_page_query(self.work.user_ids[u], PAGE_LIMIT)
        explained = await explain_page(self.sdb.db, query)
        return replace(explained, matching=await query.collection.count_documents(query.filter))

    async def matching(self, u: int) -> int:
        """Documents the first page's filter selects: what a plan with a blocking SORT examines
        at best (each matching key once), the bound a test can check on any server."""
        query = await self.strategy.first_page_query(self.work.user_ids[u], PAGE_LIMIT)
        return await query.collection.count_documents(query.filter)

    # -- inbox_buckets' fold -----------------------------------------------------------------------
    async def fold_all(self, *, rewrite: bool = False) -> Window | None:
        """What a deployment's fold pass (fanout/fold.py) does to loose entries within
        FOLD_AGE_S, done for all of them now: before anything is measured (a running service
        has folded what loading left) and after the mix (the cost the posts deferred). Only
        inbox_buckets has loose entries; None for the rest. With `rewrite`, the window also
        says what the server rewrote (`bytes_rewritten`, benchmarks/rewrite.py): the sizes it
        needs are read outside the window."""
        if not isinstance(self.strategy, InboxBuckets):
            return None
        coll = self.strategy.inbox.coll
        counter = self.sdb.counter
        recording = counter.record
        before: dict[Any, int] = {}
        if rewrite:
            loose = coll.find({"hi": MAX_ID, "s": {"$lt": HEAD_S}}, {"_id": 1})
            before = await sizes(coll, [d["_id"] async for d in loose])
            counter.record = True
        later = utcnow() + timedelta(seconds=FOLD_AGE_S + 1)
        try:
            with counter.window() as w:
                while await fold_due(self.strategy, later):
                    pass
        finally:
            counter.record = recording
        if rewrite:
            after = await sizes(coll, updated_ids(w.sent, coll.name))
            w.bytes_rewritten = rewritten(w.sent, coll.name, before, after)
            if not recording:
                w.sent = []
        return w

    # -- writes ----------------------------------------------------------------------------------
    async def _write(self, kind: str, op: Callable[[], Any]) -> WriteSample:
        """Run a write as the API does, then drain the worker: `visible` is when every timeline
        it affects shows it. Counts cover both parts."""
        with self.sdb.counter.window() as w, Stopwatch() as total:
            with Stopwatch() as api:
                await op()
            await self.worker.drain()
        return WriteSample(api.seconds, total.seconds, w)

    async def post(self, u: int, text: str) -> WriteSample:
        me = await self.user(u)
        return await self._write("post", lambda: statuses.post(self.ctx, me, text, None))

    async def write(self, op: Op) -> tuple[str, WriteSample]:
        me = await self.user(op.user)
        if op.kind == "post":
            return "post", await self.post(op.user, f"mix post by {me.handle}")
        if op.kind == "delete":
            sid = str(self.work.status_ids[op.other])
            return "delete", await self._write("delete", lambda: statuses.delete(self.ctx, me, sid))
        other = await self.user(op.other)
        if op.kind == "friend":

            async def befriend() -> None:
                await friends.request(self.ctx, me, other.handle)
                await friends.accept(self.ctx, other, me.handle)

            return "friend", await self._write("friend", befriend)
        assert op.kind == "unfriend", op
        return "unfriend", await self._write(
            "unfriend", lambda: friends.unfriend(self.ctx, me, other.handle)
        )

    async def _page_collection(self) -> str:
        """The collection a first page is read from (the first user's first page query)."""
        return (await self.strategy.first_page_query(self.work.user_ids[0], 1)).collection.name

    # -- the mix ---------------------------------------------------------------------------------
    async def run_mix(self, tick: Tick) -> Samples:
        out = Samples()
        page_coll = await self._page_collection()
        explained_users: set[int] = set()
        for op in self.work.ops:
            if op.kind == "read":
                seconds, w = await self.read_page(op.user)
                out.read_s.append(seconds)
                out.read_round_trips.append(w.round_trips)
                out.read_queries.append(w.queries(page_coll))
                out.read_windows.append(w)
                if len(explained_users) < EXPLAIN_SAMPLE and op.user not in explained_users:
                    explained_users.add(op.user)
                    out.explained.append(await self.explain(op.user))
            elif op.kind == "refresh":
                seconds, w = await self.read_page(op.user, after=self._newest.get(op.user))
                out.refresh_s.append(seconds)
                out.refresh_round_trips.append(w.round_trips)
                out.refresh_windows.append(w)
            else:
                kind, sample = await self.write(op)
                out.writes.setdefault(kind, []).append(sample)
            tick(1)
        out.fold_window = await self.fold_all(rewrite=True)
        return out

    # -- storage ---------------------------------------------------------------------------------
    async def storage(self) -> Storage:
        db = self.sdb.db
        stats = await db.command("dbStats")
        collections: dict[str, CollectionStorage] = {}
        for name in sorted(await db.list_collection_names()):
            cs = await db.command("collStats", name)
            collections[name] = CollectionStorage(
                count=int(cs.get("count", 0)),
                data_bytes=int(cs.get("size", 0)),
                index_bytes=int(cs.get("totalIndexSize", 0)),
            )
        return Storage(
            data_bytes=int(stats.get("dataSize", 0)),
            index_bytes=int(stats.get("indexSize", 0)),
            collections=collections,
        )

    # -- the sweep -------------------------------------------------------------------------------
    async def sweep_level(self, friends_count: int) -> ScalingRow:
        """A reader/author with exactly `friends_count` friends: page reads and posts."""
        u = self.work.probes[friends_count]
        page_coll = await self._page_collection()
        reads = await repeat(self.config.repeats, lambda i: self.read_page(u))
        ex = await self.explain(u)
        matching = await self.matching(u)  # before the posts below add to it
        receivers, like = self._receivers(u), self._floor_status(u)
        floor: list[float] = []

        async def post_then_floor(i: int) -> WriteSample:
            # Each post is paired with the floor of its fan-out, measured right after it in the
            # same database: the ratio compares two moments of the same machine and server
            # state (its cache, its other data), not a post with a floor timed minutes earlier
            # on an empty server.
            sample = await self.post(u, f"sweep post {i} at {friends_count} friends")
            floor.append(await raw_insert_many(self.sdb.db, receivers, like))
            return sample

        posts = await repeat(self.config.repeats, post_then_floor)
        self.sweep_windows[friends_count] = ([w for _, w in reads], [p.window for p in posts])
        row = ScalingRow.of(
            self.strategy.name, friends_count, ex, reads, page_coll, matching=matching, posts=posts
        )
        return replace(row, write_floor_ms=ms(percentile(floor, 50)))

    def _receivers(self, u: int) -> list[ObjectId]:
        """The author `u` and its friends: the owners of a post's entries."""
        ids = self.work.user_ids
        friends = [ids[b if a == u else a] for a, b in self.work.friendships if u in (a, b)]
        return [ids[u], *friends]

    def _floor_status(self, u: int) -> dict[str, Any]:
        """A status by `u` to copy in the floor's entries (raw_insert_many gives it its id)."""
        return {
            "author_id": self.work.user_ids[u],
            "author": self.work.handles[u],
            "text": self.work.text(0),
            "created_at": utcnow(),
        }


async def repeat(times: int, fn: Callable[[int], Awaitable[T]]) -> list[T]:
    """`fn(i)` up to `times` times, stopping early once SWEEP_BUDGET_S is spent (at least once)."""
    out: list[T] = []
    started = time.monotonic()
    while len(out) < times and (not out or time.monotonic() - started < SWEEP_BUDGET_S):
        out.append(await fn(len(out)))
    return out


def summarize_strategy(samples: Samples, storage: Storage) -> StrategySummary:
    base = ReadSummary.of(samples.read_s, samples.read_round_trips, samples.explained)
    read = StrategyReadSummary(
        **vars(base),
        queries_per_read=rounded(mean([float(q) for q in samples.read_queries])),
        refresh=RefreshSummary(
            p50_ms=ms(percentile(samples.refresh_s, 50)),
            p95_ms=ms(percentile(samples.refresh_s, 95)),
            round_trips_per_read=rounded(mean([float(r) for r in samples.refresh_round_trips])),
        ),
    )
    ops = {kind: OpSummary.of(s) for kind, s in samples.writes.items()}
    none = OpSummary.of([])
    return StrategySummary(
        read=read,
        write=WriteSummary.of(ops.get("post") or none, fold=samples.fold_window),
        reconcile=ReconcileSummary(
            docs_per_friend=(ops.get("friend") or none).docs,
            docs_per_unfriend=(ops.get("unfriend") or none).docs,
            docs_per_delete=(ops.get("delete") or none).docs,
            operations={k: v for k, v in ops.items() if k != "post"},
        ),
        storage=storage,
    )
