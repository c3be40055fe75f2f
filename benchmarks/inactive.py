"""`python -m benchmarks inactive`: what the TIMELINE_ACTIVE_DAYS window saves, per strategy, and
what a returning user's first page costs (issue 13, docs/benchmarks.md "Inactive users").

One author with `--friends` friends, of whom `--inactive-share` last read their timeline 30 days
ago and the rest just now. Per strategy, in its own database, in one run:
- documents written per post, every write counted (inserted, updated, deleted: the status, the
  copies, inbox_buckets' bucket updates, the outbox event and the worker's bookkeeping, shown
  apart), `--posts` posts with everyone treated as active (no window) and as many with it;
- a returning user's first page (limit 20): the latency of `GET /timeline`'s work (recording the
  return and its rebuild event, then the truth-served page), checked against the truth, and an
  active user's first page for comparison; then the time the worker takes for one rebuild.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from app.context import AppContext, reading_strategy
from app.domain.statuses import post
from app.domain.users import Account, hash_token, new_user_doc
from app.storage.embedded import EmbeddedServer
from app.storage.models import utcnow
from app.strategies import STRATEGY_NAMES
from app.strategies.truth import truth_timeline
from benchmarks.loader import open_strategy
from benchmarks.monitor import CommandCounter
from fanout.worker import Worker

# Default share of users away longer than TIMELINE_ACTIVE_DAYS. Public figures put daily over
# monthly actives at about two thirds for the largest network and far lower for Mastodon,
# whose servers count only a minority of registered accounts as monthly active: half of a
# user's friends not having read for a week is a middle, and it is the target case.
DEFAULT_INACTIVE_SHARE = 0.5
DEFAULT_FRIENDS = 2000
DEFAULT_POSTS = 5
# Returning users measured per strategy (each returns once: a return is a one-off).
DEFAULT_RETURNS = 5
PAGE = 20
# How long ago the inactive users last read: well past the default 7-day window.
AWAY = timedelta(days=30)
TEXT = "a status of typical length, " * 6
TIMELINE_MAX = 1000  # the default (app.settings)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a share between 0 and 1")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks inactive",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--inactive-share",
        type=_share,
        default=DEFAULT_INACTIVE_SHARE,
        help=f"share of users away longer than TIMELINE_ACTIVE_DAYS "
        f"(default {DEFAULT_INACTIVE_SHARE})",
    )
    p.add_argument("--friends", type=int, default=DEFAULT_FRIENDS, help="the author's friends")
    p.add_argument("--posts", type=int, default=DEFAULT_POSTS, help="posts per phase")
    p.add_argument("--returns", type=int, default=DEFAULT_RETURNS, help="returning users timed")
    p.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    p.add_argument("--mongodb-url", default=None, help="default: the embedded server")
    p.add_argument("--out", type=Path, required=True, help="directory for inactive.json")
    args = p.parse_args(argv)
    if min(args.friends, args.posts, args.returns) < 1:
        p.error("--friends, --posts and --returns must be at least 1")
    args.strategies = [n for n in args.strategies.split(",") if n]
    if not args.strategies or set(args.strategies) - set(STRATEGY_NAMES):
        p.error(f"--strategies: choose from {', '.join(STRATEGY_NAMES)}")
    return args


async def _population(
    ctx: AppContext, friends: int, share: float
) -> tuple[Account, list[ObjectId], list[ObjectId]]:
    """The author, their inactive friends and their active friends (activity recorded)."""
    now = utcnow()
    store = ctx.store
    doc = new_user_doc("author", None, hash_token(secrets.token_hex(16)))
    await store.users.insert_one(doc)
    author = Account.from_doc(doc)
    ids = [ObjectId() for _ in range(friends)]
    await store.users.insert_many(
        [
            {"_id": i, "handle": f"f{n}", "token_hash": hash_token(f"t{n}")}
            for n, i in enumerate(ids)
        ]
    )
    edges = [{"user_id": author.id, "friend_id": i, "since": now} for i in ids]
    edges += [{"user_id": i, "friend_id": author.id, "since": now} for i in ids]
    await store.friendships.insert_many(edges)
    away = round(friends * share)
    inactive, active = ids[:away], ids[away:]
    docs = [{"_id": i, "last_read_at": now - AWAY, "materialized": True} for i in inactive]
    docs += [{"_id": i, "last_read_at": now, "materialized": True} for i in active]
    docs.append({"_id": author.id, "last_read_at": now, "materialized": True})
    await store.user_activity.insert_many(docs)
    return author, inactive, active


# The worker's own bookkeeping (the event's claim and completion, the author lease): written
# for every post whatever the strategy, so shown apart from what the strategy writes.
BOOKKEEPING = frozenset({"events", "author_leases"})


async def _written_per_post(
    ctx: AppContext, counter: CommandCounter, author: Account, posts: int
) -> tuple[float, float]:
    """Documents written per post, every write counted (inserted, updated, deleted) as
    `benchmarks run` counts them: (everything, without the worker's bookkeeping)."""
    worker = Worker(ctx, name="bench")
    written = derived = 0
    for _ in range(posts):
        with counter.window() as w:
            await post(ctx, author, TEXT, None)
            await worker.drain()
        written += w.docs_written
        derived += sum(n for c, n in w.docs_by_collection.items() if c not in BOOKKEEPING)
    await worker.release_leases()
    return written / posts, derived / posts


async def _first_page_ms(ctx: AppContext, user_id: ObjectId) -> tuple[float, bool]:
    """A first page as GET /timeline computes it; whether it equals the truth."""
    start = time.perf_counter()
    strategy = await reading_strategy(ctx, user_id)
    page = await strategy.read(user_id, limit=PAGE)
    elapsed = (time.perf_counter() - start) * 1000
    friends = await ctx.graph.friend_ids(user_id)
    truth = await truth_timeline(ctx.store.statuses, user_id, friends, ctx.settings.timeline_max)
    return elapsed, [s.id for s in page.items] == [s["_id"] for s in truth[:PAGE]]


async def measure_one(
    client: AsyncMongoClient[Any],
    counter: CommandCounter,
    url: str,
    name: str,
    args: argparse.Namespace,
    embedded: bool,
) -> dict[str, Any]:
    db_name = f"bench_inactive_{uuid.uuid4().hex[:8]}"
    sdb = await open_strategy(
        client,
        counter,
        url=url,
        strategy=name,
        db_name=db_name,
        timeline_max=TIMELINE_MAX,
        embedded=embedded,
    )
    ctx = sdb.ctx
    try:
        author, inactive, active = await _population(ctx, args.friends, args.inactive_share)
        # Everyone treated as active: the same strategy built without the window.
        no_window = dataclasses.replace(ctx, strategy=ctx.build_strategy(ctx.strategy.name))
        without, without_derived = await _written_per_post(no_window, counter, author, args.posts)
        with_window, with_derived = await _written_per_post(ctx, counter, author, args.posts)
        returning, active_ms, rebuild_s, correct = [], [], [], True
        for uid in inactive[: args.returns]:
            ms, ok = await _first_page_ms(ctx, uid)
            returning.append(ms)
            correct = correct and ok
            start = time.perf_counter()
            worker = Worker(ctx, name="bench")
            await worker.drain()
            await worker.release_leases()
            rebuild_s.append(time.perf_counter() - start)
        for uid in active[: args.returns]:
            ms, ok = await _first_page_ms(ctx, uid)
            active_ms.append(ms)
            correct = correct and ok
        statuses = await ctx.store.statuses.count_documents({})
    finally:
        await client.drop_database(db_name)
    return {
        "strategy": name,
        "statuses": statuses,
        "docs_written_per_post_all_active": round(without, 1),
        "docs_written_per_post_with_window": round(with_window, 1),
        "derived_docs_written_per_post_all_active": round(without_derived, 1),
        "derived_docs_written_per_post_with_window": round(with_derived, 1),
        "ratio": round(with_window / without, 3),
        "derived_ratio": round(with_derived / without_derived, 3),
        "returning_first_page_ms_median": round(statistics.median(returning), 1)
        if returning
        else None,
        "active_first_page_ms_median": round(statistics.median(active_ms), 1)
        if active_ms
        else None,
        "rebuild_s_median": round(statistics.median(rebuild_s), 3) if rebuild_s else None,
        "first_pages_equal_truth": correct,
    }


async def measure(url: str, args: argparse.Namespace, embedded: bool) -> dict[str, Any]:
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(url, event_listeners=[counter], tz_aware=True)
    try:
        results = [
            await measure_one(client, counter, url, name, args, embedded)
            for name in args.strategies
        ]
    finally:
        await client.close()
    return {
        "backend": "embedded" if embedded else "mongodb",
        "friends": args.friends,
        "inactive_share": args.inactive_share,
        "posts_per_phase": args.posts,
        "strategies": results,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mongodb_url:
        result = asyncio.run(measure(args.mongodb_url, args, embedded=False))
    else:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "db") as server:
            result = asyncio.run(measure(server.url, args, embedded=True))
    (args.out / "inactive.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'inactive.json'}")
    return 0
