"""`python -m benchmarks hybrid`: the hybrid strategy against receiver_copies on the graph it is
for, and the cost of authors crossing HYBRID_THRESHOLD.

The graph: a reader with `--friends` friends, `--large` of whom have more than the threshold
(their other friends drawn from the reader's), and a small author with 10 of them. Each friend
posts once and each large author `--large-posts` times; both strategies derive it through their
worker handlers (benchmarks.loader), and the reader's timeline is compared with one computed in
Python. Measured per strategy: the reader's first page (p50 ms, round trips), and how long a
post of the small author and one of the reader (the `--friends`-friend author) take to reach
every timeline (the API's write and a worker drain). Then, for hybrid, the crossing sweep: for
each level N an author with N friends crosses a threshold of N - 1 upwards and back down
under one whose low mark is N (the worker's `rebuild_author`, as in a friendship event): time,
documents written, and whether the pages of sampled friends stayed exact. Writes hybrid.json
(and prints it) in --out.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from app.domain import statuses
from app.domain.users import by_id
from app.maintenance import truth_ids
from app.storage.models import utcnow
from app.strategies.hybrid import low_mark
from benchmarks.backend import run_and_write
from benchmarks.config import PAGE_LIMIT
from benchmarks.loader import StrategyDb, derive, load_truth, open_strategy, workload_timeline
from benchmarks.monitor import CommandCounter
from benchmarks.stats import Stopwatch
from benchmarks.workload import BASE_TIME, Workload, _oid
from fanout.worker import Worker

STRATEGIES = ("receiver_copies", "hybrid")
SMALL_AUTHOR_FRIENDS = 10  # the "10-friend author"
# Friends whose pages are compared with the truth after each crossing.
CROSSING_CHECKS = 10
# Statuses of each crossing author: its window is what a downward crossing copies.
CROSSING_POSTS = 20
TIMELINE_MAX = 1000
FULL = {"friends": 5000, "large": 50, "threshold": 1000, "sweep": "100,1000,5000", "repeats": 10}
QUICK = {"friends": 500, "large": 50, "threshold": 100, "sweep": "10,100,500", "repeats": 5}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks hybrid", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a reader of 500 friends (~1 minute)")
    p.add_argument("--friends", type=int, help="the reader's friends (5000; quick 500)")
    p.add_argument("--large", type=int, help="of them large-audience authors (50)")
    p.add_argument("--threshold", type=int, help="HYBRID_THRESHOLD (1000; quick 100)")
    p.add_argument("--large-posts", type=int, default=2, help="statuses per large author")
    p.add_argument("--sweep", help="crossing levels, friends (100,1000,5000; quick 10,100,500)")
    p.add_argument("--repeats", type=int, help="page reads and posts per strategy")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mongodb-url", default=None, help="default: the embedded server")
    p.add_argument("--out", type=Path, required=True, help="directory for hybrid.json")
    args = p.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.sweep = [int(x) for x in str(args.sweep).split(",") if x]
    if not 0 < args.large <= args.friends or args.threshold >= args.friends:
        p.error("need 0 < --large <= --friends and --threshold < --friends")
    if max(args.sweep) > args.friends:
        p.error("--sweep levels must not exceed --friends")
    return args


def graph(args: argparse.Namespace) -> Workload:
    """User 0 the reader, 1..friends their friends (the first `large` of them large-audience),
    then the small author."""
    rng = random.Random(args.seed)
    n = args.friends
    friends = list(range(1, n + 1))
    edges = {(0, f) for f in friends}
    for k in range(1, args.large + 1):
        others = rng.sample([f for f in friends if f != k], args.threshold)
        edges.update((min(k, f), max(k, f)) for f in others)
    small = n + 1
    edges.update((f, small) for f in rng.sample(friends, SMALL_AUTHOR_FRIENDS))
    authors = friends + [k for k in range(1, args.large + 1) for _ in range(args.large_posts)]
    rng.shuffle(authors)
    users = n + 2
    return Workload(
        user_ids=[_oid(rng, BASE_TIME - 10_000_000 + i) for i in range(users)],
        handles=["reader"] + [f"f{i:05d}" for i in friends] + ["small"],
        friendships=sorted(edges),
        status_ids=[_oid(rng, BASE_TIME + i) for i in range(len(authors))],
        status_authors=authors,
        probes={},
    )


async def _page(sdb: StrategyDb, uid: ObjectId, repeats: int) -> dict[str, Any]:
    times, trips = [], []
    for _ in range(repeats):
        with sdb.counter.window() as w, Stopwatch() as sw:
            await sdb.ctx.strategy.read(uid, limit=PAGE_LIMIT)
        times.append(sw.seconds * 1000)
        trips.append(w.round_trips)
    return {"p50_ms": round(statistics.median(times), 2), "round_trips": max(trips)}


async def _visible_s(sdb: StrategyDb, uid: ObjectId, repeats: int) -> dict[str, Any]:
    """A post by `uid` through the API's code, then a worker drain: until every timeline
    shows it. Median seconds and documents written per post."""
    me = await by_id(sdb.ctx.store, uid)
    assert me is not None
    worker = Worker(sdb.ctx, name="bench-hybrid")
    times, docs = [], []
    for i in range(repeats):
        with sdb.counter.window() as w, Stopwatch() as sw:
            await statuses.post(sdb.ctx, me, f"measured post {i}", None)
            await worker.drain()
        times.append(sw.seconds)
        docs.append(w.docs_written)
    await worker.release_leases()
    return {"p50_s": round(statistics.median(times), 3), "docs_written": max(docs)}


async def _exact(sdb: StrategyDb, uids: list[ObjectId]) -> bool:
    for uid in uids:
        if await sdb.ctx.strategy.timeline_ids(uid) != await truth_ids(sdb.ctx, uid):
            return False
    return True


async def _crossing(sdb: StrategyDb, work: Workload, level: int) -> dict[str, Any]:
    """An author with `level` of the reader's friends crosses a threshold of level - 1 up,
    then down under the least threshold whose low mark (hybrid.low_mark) is `level`; each
    crossing applied as the worker does (`rebuild_author`)."""
    ctx = sdb.ctx
    author = ObjectId()
    store = ctx.store
    await store.users.insert_one(
        {"_id": author, "handle": f"crosser{level}", "token_hash": f"x{level}"}
    )
    friends = work.user_ids[1 : level + 1]
    now = utcnow()
    edges = [{"user_id": author, "friend_id": f, "since": now} for f in friends]
    edges += [{"user_id": f, "friend_id": author, "since": now} for f in friends]
    await store.friendships.insert_many(edges)
    for i in range(CROSSING_POSTS):
        await store.statuses.insert_one(
            {"author_id": author, "author": f"crosser{level}", "text": f"x {i}", "created_at": now}
        )
    out: dict[str, Any] = {"friends": level}
    checked = friends[:CROSSING_CHECKS]
    lowered = next(t for t in itertools.count(level) if low_mark(t) >= level)
    for direction, threshold in (("up", level - 1), ("down", lowered)):
        knob = ctx.settings.model_copy(update={"hybrid_threshold": threshold})
        strategy = ctx.build_strategy("hybrid", window=True, settings=knob)
        with sdb.counter.window() as w, Stopwatch() as sw:
            await strategy.rebuild_author(author)
        out[direction] = {
            "s": round(sw.seconds, 3),
            "docs_written": w.docs_written,
            "round_trips": w.round_trips,
            "pages_exact": await _exact(sdb, checked),
        }
    return out


async def measure_one(
    client: AsyncMongoClient[Any], counter: CommandCounter, url: str, name: str, args: Any
) -> dict[str, Any]:
    work = graph(args)
    db_name = f"bench_hybrid_{name}"
    await client.drop_database(db_name)
    sdb = await open_strategy(
        client,
        counter,
        url=url,
        strategy=name,
        db_name=db_name,
        timeline_max=TIMELINE_MAX,
        embedded=args.embedded,
        hybrid_threshold=args.threshold,
    )
    try:
        await load_truth(sdb, work, args.seed, lambda _: None)
        start = time.perf_counter()
        await derive(sdb, work, lambda _: None)
        derive_s = time.perf_counter() - start
        reader, small = work.user_ids[0], work.user_ids[-1]
        exact = await sdb.ctx.strategy.timeline_ids(reader) == workload_timeline(
            work, 0, TIMELINE_MAX
        )
        result: dict[str, Any] = {
            "strategy": name,
            "derive_s": round(derive_s, 1),
            "reader_timeline_exact": exact,
            "page": await _page(sdb, reader, args.repeats),
            "post_small_author": await _visible_s(sdb, small, args.repeats),
            "post_reader": await _visible_s(sdb, reader, min(args.repeats, 3)),
        }
        if name == "hybrid":
            result["crossings"] = [await _crossing(sdb, work, n) for n in args.sweep]
        return result
    finally:
        await client.drop_database(db_name)


def goals(by_name: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, computed from the numbers."""
    h, rc = by_name.get("hybrid"), by_name.get("receiver_copies")
    out: dict[str, Any] = {}
    if h:
        ratio = h["post_reader"]["p50_s"] / max(h["post_small_author"]["p50_s"], 1e-9)
        out["large_post_over_small_post"] = round(ratio, 2)
        out["large_post_within_2x"] = ratio <= 2
        out["page_round_trips"] = h["page"]["round_trips"]
        out["page_round_trips_within_3"] = h["page"]["round_trips"] <= 3
    if h and rc:
        ratio = h["page"]["p50_ms"] / max(rc["page"]["p50_ms"], 1e-9)
        out["page_over_receiver_copies"] = round(ratio, 2)
        out["page_within_3x"] = ratio <= 3
    return out


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(url, event_listeners=[counter], tz_aware=True)
    try:
        results = [await measure_one(client, counter, url, n, args) for n in STRATEGIES]
    finally:
        await client.close()
    by_name = {r["strategy"]: r for r in results}
    return {
        "backend": "embedded" if args.embedded else "mongodb",
        "friends": args.friends,
        "large": args.large,
        "threshold": args.threshold,
        "strategies": results,
        "goals": goals(by_name),
    }


def main(argv: list[str]) -> int:
    result = run_and_write(parse_args(argv), measure, "hybrid.json")
    return 0 if all(r["reader_timeline_exact"] for r in result["strategies"]) else 1
