"""`python -m benchmarks fanout`: how fast the worker fans one status out to N friends, against
the floor of raw `insert_many` of the same N entries, in one run on one backend.

Both are measured `--repeat` times, alternating, and the medians reported. The worker figure is
the whole event as the worker runs it (claim, the friend list, the batched
inserts, the trims, the checkpoints, marking it done), timed around `Worker.process_one()`;
entries = N + 1 (the author's own copy is written by the post itself and found already there).
The raw figure is one unordered `insert_many` of N ready-made entries into a scratch collection
with the same indexes as `timeline_entries`. ratio = worker / raw; the target is >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bson import ObjectId

from app.context import AppContext, build_context
from app.domain.statuses import post
from app.domain.users import Account, hash_token, new_user_doc
from app.settings import load_settings
from app.storage.db import connect
from app.storage.embedded import EmbeddedServer
from app.storage.models import TimelineEntry, utcnow
from app.strategies.materialized import FANOUT_BATCH
from fanout.worker import Worker

DEFAULT_FRIENDS = 5000
# Timings on a shared machine wobble; the median of a few alternating runs is steadier.
DEFAULT_REPEAT = 3
# A status of typical length (a few hundred bytes of BSON per copy, like the real service).
TEXT = "a status of typical length, " * 6


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks fanout",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--friends", type=int, default=DEFAULT_FRIENDS, help="N (default 5000)")
    p.add_argument(
        "--mongodb-url", default=None, help="a MongoDB to measure (default: the embedded server)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"statuses fanned out, alternating with raw inserts; medians are reported "
        f"(default {DEFAULT_REPEAT})",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for fanout.json")
    args = p.parse_args(argv)
    if args.friends < 1 or args.repeat < 1:
        p.error("--friends and --repeat must be at least 1")
    return args


async def _author_with_friends(ctx: AppContext, n: int) -> Account:
    now = utcnow()
    doc = new_user_doc("author", None, hash_token(secrets.token_hex(16)))
    await ctx.store.users.insert_one(doc)
    author = Account.from_doc(doc)
    friends = [
        {"_id": ObjectId(), "handle": f"f{i}", "token_hash": hash_token(secrets.token_hex(16))}
        for i in range(n)
    ]
    await ctx.store.users.insert_many(friends)
    edges = [{"user_id": author.id, "friend_id": f["_id"], "since": now} for f in friends]
    edges += [{"user_id": f["_id"], "friend_id": author.id, "since": now} for f in friends]
    await ctx.store.friendships.insert_many(edges)
    return author


async def _raw_insert_many(db: Any, owners: list[ObjectId], like: dict[str, Any]) -> float:
    """Seconds for one unordered insert_many of one entry per owner, same indexes."""
    scratch = db[f"scratch_{uuid.uuid4().hex[:8]}"]
    await scratch.create_indexes(TimelineEntry.Settings.indexes)
    status_id = ObjectId()
    docs = [{**like, "owner_id": o, "status_id": status_id} for o in owners]
    start = time.perf_counter()
    await scratch.insert_many(docs, ordered=False)
    elapsed = time.perf_counter() - start
    await scratch.drop()
    return elapsed


async def measure(url: str, friends: int, repeat: int, embedded: bool) -> dict[str, Any]:
    settings = load_settings(
        mongodb_url=url,
        mongodb_db=f"bench_fanout_{uuid.uuid4().hex[:8]}",
        timeline_strategy="receiver_copies",
    )
    database = await connect(url, settings.mongodb_db, embedded=embedded)
    worker_runs: list[float] = []
    raw_runs: list[float] = []
    try:
        ctx = await build_context(settings, database)
        author = await _author_with_friends(ctx, friends)
        users = ctx.store.users
        owners = [u["_id"] async for u in users.find({"_id": {"$ne": author.id}}, {"_id": 1})]
        entries = ctx.store.timeline_entries
        # Alternate the two so that a busy machine slows both alike; report medians.
        for _ in range(repeat):
            status, _ = await post(ctx, author, TEXT, None)
            worker = Worker(ctx, name="bench")
            start = time.perf_counter()
            applied = await worker.process_one()
            worker_runs.append(time.perf_counter() - start)
            assert applied, "the worker found no event to apply"
            await worker.release_leases()
            written = await entries.count_documents({"status_id": ObjectId(status["id"])})
            assert written == friends + 1, f"expected {friends + 1} copies, found {written}"
            like = await entries.find_one({}, {"_id": 0, "owner_id": 0, "status_id": 0})
            assert like is not None
            raw_runs.append(await _raw_insert_many(database.db, owners, like))
        info = await database.client.admin.command("buildInfo")
    finally:
        await database.client.drop_database(settings.mongodb_db)
        await database.close()
    worker_s, raw_s = statistics.median(worker_runs), statistics.median(raw_runs)
    worker_rate = (friends + 1) / worker_s
    raw_rate = friends / raw_s
    return {
        "friends": friends,
        "backend": "embedded" if embedded else "mongodb",
        "server_version": info.get("version"),
        "fanout_batch": FANOUT_BATCH,
        "repeat": repeat,
        "worker_seconds": [round(x, 4) for x in worker_runs],
        "raw_insert_many_seconds": [round(x, 4) for x in raw_runs],
        "worker_entries_per_s": round(worker_rate, 1),
        "raw_insert_many_entries_per_s": round(raw_rate, 1),
        "ratio": round(worker_rate / raw_rate, 3),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mongodb_url:
        result = asyncio.run(measure(args.mongodb_url, args.friends, args.repeat, embedded=False))
    else:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "db") as server:
            result = asyncio.run(measure(server.url, args.friends, args.repeat, embedded=True))
    (args.out / "fanout.json").write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    print(f"wrote {args.out / 'fanout.json'}")
    return 0
