"""`python -m benchmarks removals`: what the removal rule costs a page (issue 20, docs/benchmarks.md
"What the removal rule costs").

Per strategy, in its own database: one reader with `--friends` friends who posted `--posts` each
(drained, so the reader's timeline is full). Then, interleaved in one run, `--pages` first pages
as the strategy reads them (`strategy.read`, what a page cost before the rule) and as the API
serves them (`app.domain.timeline_reads.read_page`, checked against the revocation records): latency
p50 and round trips of each. Then, with the worker stopped, `--deletes` statuses of the reader's
first page are deleted and `--unfriends` friends unfriend them: the checked pages again, and
whether any of them showed a removed status (it must not).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient

from app.context import AppContext
from app.domain import friends, statuses
from app.domain.timeline_reads import read_page
from app.domain.users import Account, hash_token, new_user_doc
from app.storage.models import utcnow
from app.strategies import STRATEGY_NAMES
from benchmarks.backend import run_and_write
from benchmarks.loader import open_strategy
from benchmarks.monitor import CommandCounter
from fanout.worker import Worker

PAGE = 20
TEXT = "a status of typical length, " * 6
DEFAULTS = {"friends": 50, "posts": 10, "pages": 200, "deletes": 5, "unfriends": 2}
TIMELINE_MAX = 1000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks removals",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    for name, value in DEFAULTS.items():
        p.add_argument(f"--{name}", type=int, default=value, help=f"(default {value})")
    p.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    p.add_argument("--mongodb-url", default=None, help="default: the embedded server")
    p.add_argument("--out", type=Path, required=True, help="directory for removals.json")
    args = p.parse_args(argv)
    if min(getattr(args, n) for n in DEFAULTS) < 1:
        p.error("every count must be at least 1")
    args.strategies = [n for n in args.strategies.split(",") if n]
    if not args.strategies or set(args.strategies) - set(STRATEGY_NAMES):
        p.error(f"--strategies: choose from {', '.join(STRATEGY_NAMES)}")
    return args


async def _people(ctx: AppContext, count: int) -> tuple[Account, list[Account]]:
    """The reader and their friends (friends of the reader only)."""
    now = utcnow()
    docs = [new_user_doc(f"u{n}", None, hash_token(uuid.uuid4().hex)) for n in range(count + 1)]
    docs[0]["friend_count"] = count
    for doc in docs[1:]:
        doc["friend_count"] = 1
    await ctx.store.users.insert_many(docs)
    reader, *others = [Account.from_doc(d) for d in docs]
    edges = [{"user_id": reader.id, "friend_id": o.id, "since": now} for o in others]
    edges += [{"user_id": o.id, "friend_id": reader.id, "since": now} for o in others]
    await ctx.store.friendships.insert_many(edges)
    return reader, others


def _summary(ms: list[float], trips: list[int]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(statistics.quantiles(ms, n=10)[-1], 3) if len(ms) > 1 else ms[0],
        "round_trips": round(statistics.mean(trips), 2),
    }


async def _pages(
    ctx: AppContext, counter: CommandCounter, reader: ObjectId, pages: int
) -> dict[str, Any]:
    """`pages` raw and checked first pages, alternating which goes first."""
    raw: tuple[list[float], list[int]] = ([], [])
    checked: tuple[list[float], list[int]] = ([], [])
    strategy, coll = ctx.strategy, ctx.store.revocations
    shown: set[ObjectId] = set()
    for i in range(pages):
        for kind in ("raw", "checked") if i % 2 == 0 else ("checked", "raw"):
            with counter.window() as w:
                start = time.perf_counter()
                if kind == "raw":
                    await strategy.read(reader, limit=PAGE)
                else:
                    page = await read_page(coll, strategy, reader, limit=PAGE)
                    shown |= {v.id for v in page.items}
                elapsed = (time.perf_counter() - start) * 1000
            into = raw if kind == "raw" else checked
            into[0].append(elapsed)
            into[1].append(w.round_trips)
    return {"raw": _summary(*raw), "checked": _summary(*checked), "shown": shown}


async def measure_one(
    client: AsyncMongoClient[Any], counter: CommandCounter, url: str, name: str, args: Any
) -> dict[str, Any]:
    db_name = f"bench_removals_{uuid.uuid4().hex[:8]}"
    sdb = await open_strategy(
        client,
        counter,
        url=url,
        strategy=name,
        db_name=db_name,
        timeline_max=TIMELINE_MAX,
        embedded=args.embedded,
    )
    ctx = sdb.ctx
    try:
        reader, others = await _people(ctx, args.friends)
        worker = Worker(ctx, name="bench-removals")
        for author in others:
            for _ in range(args.posts):
                await statuses.post(ctx, author, TEXT, None)
        await worker.drain()
        assert reader.id is not None
        before = await _pages(ctx, counter, reader.id, args.pages)
        # Removals with the worker stopped: statuses on the reader's first page, and friends.
        first = await read_page(ctx.store.revocations, ctx.strategy, reader.id, limit=PAGE)
        by_handle = {o.handle: o for o in others}
        removed = [v.id for v in first.items[: args.deletes]]
        for view in first.items[: args.deletes]:
            await statuses.delete(ctx, by_handle[view.author], str(view.id))
        for friend in others[-args.unfriends :]:
            await friends.unfriend(ctx, friend, reader.handle)
            removed += [s["_id"] async for s in ctx.store.statuses.find({"author_id": friend.id})]
        pending = await _pages(ctx, counter, reader.id, args.pages)
        await worker.drain()
        await worker.release_leases()
    finally:
        await client.drop_database(db_name)
    return {
        "strategy": name,
        "reads_truth": ctx.strategy.reads_truth,
        "page_without_check": before["raw"],
        "page_checked": before["checked"],
        "checked_over_unchecked_p50": round(
            before["checked"]["p50_ms"] / max(before["raw"]["p50_ms"], 1e-9), 2
        ),
        "extra_round_trips": round(
            before["checked"]["round_trips"] - before["raw"]["round_trips"], 2
        ),
        "removals_in_flight": {"deletes": args.deletes, "unfriends": args.unfriends},
        "page_checked_with_removals_in_flight": pending["checked"],
        "page_unchecked_with_removals_in_flight": pending["raw"],
        "removed_statuses_shown": len(pending["shown"] & set(removed)),
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(url, event_listeners=[counter], tz_aware=True)
    try:
        results = [await measure_one(client, counter, url, n, args) for n in args.strategies]
    finally:
        await client.close()
    return {
        "backend": "embedded" if args.embedded else "mongodb",
        "page_limit": PAGE,
        **{n: getattr(args, n) for n in DEFAULTS},
        "strategies": results,
    }


def main(argv: list[str]) -> int:
    result = run_and_write(parse_args(argv), measure, "removals.json")
    return 0 if all(r["removed_statuses_shown"] == 0 for r in result["strategies"]) else 1
