"""Putting the workload into one strategy's database: the source of truth by bulk inserts, then
the strategy's own handlers derive their data, then a spot check against the ground truth."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beanie import init_beanie
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.context import AppContext, build_context
from app.maintenance import truth_ids
from app.settings import HYBRID_THRESHOLD_DEFAULT, Settings
from app.storage.db import Database
from app.storage.models import DOCUMENT_MODELS
from app.strategies.contract import Contention
from benchmarks.monitor import CommandCounter
from benchmarks.workload import Workload

# Documents per insert_many while loading: big enough to amortize the round trip, small enough
# that one progress tick stays under a second on the embedded server.
LOAD_BATCH = 2000
# Authors whose statuses are derived at the same time: overlaps the client's BSON work with the
# server's; one author's statuses are still applied one at a time, in order, as the worker does.
DERIVE_CONCURRENCY = 4
# A handler that raced concurrent derivations of other authors into the same timelines
# (Contention) runs again after this pause, as the worker retries it (fanout/worker.py).
CONTENTION_RETRY_S = 0.05
# Ordinary users whose timelines are compared with the ground truth after deriving (besides
# every probe user): a benchmark that measured wrong data would be worthless.
CHECK_SAMPLE = 10

Tick = Callable[[int], None]


@dataclass
class StrategyDb:
    """One strategy's copy of the workload, with Beanie bound to it (one at a time)."""

    ctx: AppContext
    db: AsyncDatabase[Any]
    counter: CommandCounter


async def open_strategy(
    client: AsyncMongoClient[Any],
    counter: CommandCounter,
    *,
    url: str,
    strategy: str,
    db_name: str,
    timeline_max: int,
    embedded: bool,
    hybrid_threshold: int = HYBRID_THRESHOLD_DEFAULT,
) -> StrategyDb:
    """Bind Beanie's documents to `db_name` and build the strategy's context on `client` (whose
    command listener counts what the domain code sends). Beanie binds classes globally, so the
    benchmark measures strategies one after the other in one process."""
    db = client[db_name]
    await init_beanie(database=db, document_models=DOCUMENT_MODELS)
    hello = await client.admin.command("hello")
    supports_txn = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    database = Database(client=client, db=db, supports_transactions=supports_txn, embedded=embedded)
    settings = Settings(
        _env_file=None,
        mongodb_url=url,
        mongodb_db=db_name,
        timeline_strategy=strategy,
        timeline_max=timeline_max,
        hybrid_threshold=hybrid_threshold,
    )
    return StrategyDb(await build_context(settings, database), db, counter)


def _user_docs(work: Workload, seed: int) -> list[dict[str, Any]]:
    return [
        {
            "_id": uid,
            "handle": work.handles[i],
            "display_name": None,
            # Benchmark users never authenticate; the hash only has to be unique.
            "token_hash": hashlib.sha256(f"bench-{seed}-{i}".encode()).hexdigest(),
            "created_at": uid.generation_time,
        }
        for i, uid in enumerate(work.user_ids)
    ]


def _edge_docs(work: Workload) -> list[dict[str, Any]]:
    ids = work.user_ids
    docs = []
    for a, b in work.friendships:
        since = max(ids[a], ids[b]).generation_time
        docs.append({"user_id": ids[a], "friend_id": ids[b], "since": since})
        docs.append({"user_id": ids[b], "friend_id": ids[a], "since": since})
    return docs


def _status_docs(work: Workload) -> list[dict[str, Any]]:
    return [
        {
            "_id": sid,
            "author_id": work.user_ids[work.status_authors[i]],
            "author": work.handles[work.status_authors[i]],
            "text": work.text(i),
            "created_at": sid.generation_time,
        }
        for i, sid in enumerate(work.status_ids)
    ]


def truth_size(work: Workload) -> int:
    """Documents `load_truth` writes (for a progress bar)."""
    return len(work.user_ids) + 2 * len(work.friendships) + len(work.status_ids)


async def load_truth(sdb: StrategyDb, work: Workload, seed: int, tick: Tick) -> None:
    for name, docs in (
        ("users", _user_docs(work, seed)),
        ("friendships", _edge_docs(work)),
        ("statuses", _status_docs(work)),
    ):
        coll = sdb.db[name]
        for start in range(0, len(docs), LOAD_BATCH):
            batch = docs[start : start + LOAD_BATCH]
            await coll.insert_many(batch, ordered=False)
            tick(len(batch))


async def derive(sdb: StrategyDb, work: Workload, tick: Tick) -> None:
    """Let the strategy build its derived data the way the worker would: `apply_posted` for every
    status, each author's statuses in id order."""
    by_author: dict[int, list[int]] = defaultdict(list)
    for s, author in enumerate(work.status_authors):
        by_author[author].append(s)
    gate = asyncio.Semaphore(DERIVE_CONCURRENCY)
    strategy = sdb.ctx.strategy

    async def settle(author: ObjectId) -> None:
        async with gate:
            await strategy.rebuild_author(author)

    # Each author's own state first, as their friendship events left it (hybrid: which side of
    # HYBRID_THRESHOLD they are on; nothing for the other strategies).
    await asyncio.gather(*(settle(uid) for uid in work.user_ids))

    async def one_author(author: int, statuses: list[int]) -> None:
        async with gate:
            for s in statuses:
                while True:
                    try:
                        await strategy.apply_posted(work.user_ids[author], work.status_ids[s])
                        break
                    except Contention:  # as the worker does: run it again shortly
                        await asyncio.sleep(CONTENTION_RETRY_S)
                tick(1)

    await asyncio.gather(*(one_author(a, ss) for a, ss in sorted(by_author.items())))


def workload_timeline(work: Workload, user: int, max_items: int) -> list[ObjectId]:
    """`user`'s timeline computed in Python from the generated workload (before the mix): the
    newest `max_items` statuses by the user or a friend. Independent of every query, so it
    checks fanout_on_read (whose page query is the database's ground-truth query) too."""
    authors = {user} | {b for a, b in work.friendships if a == user}
    authors |= {a for a, b in work.friendships if b == user}
    mine = [
        sid for sid, a in zip(work.status_ids, work.status_authors, strict=True) if a in authors
    ]
    return sorted(mine, reverse=True)[:max_items]


async def spot_check(sdb: StrategyDb, work: Workload, max_friends: int) -> tuple[list[str], int]:
    """Handles whose timeline, as the strategy reads it, differs from the ground truth (the
    database's and the workload's), and how many users were compared."""
    # The ground truth is a `$in` over the friend list, whose cost grows with the square of the
    # list on the embedded server (minutes at 5,000): larger probe users are not checked.
    users = [u for level, u in work.probes.items() if level <= max_friends]
    step = max(1, work.regular_users // CHECK_SAMPLE)
    users += list(range(0, work.regular_users, step))[:CHECK_SAMPLE]
    wrong = []
    for u in users:
        uid = work.user_ids[u]
        seen = await sdb.ctx.strategy.timeline_ids(uid)
        expected = workload_timeline(work, u, sdb.ctx.settings.timeline_max)
        if seen != expected or await truth_ids(sdb.ctx, uid) != expected:
            wrong.append(work.handles[u])
    return wrong, len(users)
