"""Shared by the worker, maintenance and switch tests: bulk set-up of large friend graphs,
friendship changes through the real outbox, worker subprocesses, and a reference model of
every timeline computed in Python from the source of truth."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bson import ObjectId

from app.context import AppContext
from app.domain.users import hash_token
from app.pipeline import outbox
from app.settings import Settings
from app.storage.db import Session
from app.storage.models import Event, Friendship, Status, TimelineEntry, User, utcnow
from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.loose import merge
from fanout.worker import Worker
from tests.harness import Harness


async def bulk_users(n: int, prefix: str) -> list[ObjectId]:
    """Insert `n` users directly (no tokens anyone knows): fast set-up for big graphs."""
    docs = [
        {
            "_id": ObjectId(),
            "handle": f"{prefix}{i}",
            "token_hash": hash_token(secrets.token_hex(8)),
            "created_at": utcnow(),
        }
        for i in range(n)
    ]
    await User.get_pymongo_collection().insert_many(docs)
    return [d["_id"] for d in docs]


async def bulk_befriend(a: ObjectId, others: list[ObjectId]) -> None:
    """Both edges of each friendship, without events: only valid before anyone has posted."""
    now = utcnow()
    edges = [{"user_id": a, "friend_id": b, "since": now} for b in others]
    edges += [{"user_id": b, "friend_id": a, "since": now} for b in others]
    await Friendship.get_pymongo_collection().insert_many(edges)


async def set_friends(ctx: AppContext, a: ObjectId, b: ObjectId, friends: bool) -> None:
    """Befriend or unfriend through the outbox, as the API does (two events)."""

    async def change(session: Session) -> None:
        if friends:
            await ctx.graph.link(a, b, session=session)
        else:
            await ctx.graph.unlink(a, b, session=session)

    events = outbox.friendship_events(a, b, friends=friends)
    await ctx.commit(events, change)


async def reference_timelines(max_items: int) -> dict[ObjectId, list[ObjectId]]:
    """The semantics of ../shared/API.md computed in Python for every user: the `max_items`
    newest existing statuses by the user or a current friend, newest first."""
    by_author: dict[ObjectId, list[ObjectId]] = defaultdict(list)
    async for s in Status.get_pymongo_collection().find({}, {"author_id": 1}):
        by_author[s["author_id"]].append(s["_id"])
    friends: dict[ObjectId, list[ObjectId]] = defaultdict(list)
    async for e in Friendship.get_pymongo_collection().find({}, {"user_id": 1, "friend_id": 1}):
        friends[e["user_id"]].append(e["friend_id"])
    result = {}
    async for u in User.get_pymongo_collection().find({}, {"_id": 1}):
        uid = u["_id"]
        ids = [s for a in (uid, *friends[uid]) for s in by_author[a]]
        result[uid] = sorted(ids, reverse=True)[:max_items]
    return result


async def copies_by_owner(max_items: int) -> tuple[dict[ObjectId, list[ObjectId]], int, int]:
    """receiver_copies' materialized timelines as reads see them (capped), plus the number of
    entries and of distinct (owner, status) pairs (equal unless there are duplicates)."""
    owners: dict[ObjectId, list[ObjectId]] = defaultdict(list)
    total = 0
    pairs = set()
    async for e in TimelineEntry.get_pymongo_collection().find({}, {"owner_id": 1, "status_id": 1}):
        total += 1
        pairs.add((e["owner_id"], e["status_id"]))
        owners[e["owner_id"]].append(e["status_id"])
    capped = {o: sorted(ids, reverse=True)[:max_items] for o, ids in owners.items()}
    return capped, total, len(pairs)


async def inbox_copies_by_owner(
    strategy: InboxBuckets, max_items: int
) -> tuple[dict[ObjectId, list[ObjectId]], int, int]:
    """inbox_buckets' chains as copies_by_owner gives receiver_copies' entries: the timelines
    (capped), the number of entries held and of distinct (owner, status) pairs."""
    owners: dict[ObjectId, list[ObjectId]] = {}
    total = 0
    pairs = set()
    for owner in await strategy.inbox.coll.distinct("owner_id"):
        chain = await strategy.inbox.chain(owner)
        # What reads show: the chain and the live loose entries (a loose copy of a status the
        # chain holds is the same entry, waiting for the fold to delete it).
        ids = [i["s"] for i in merge(chain.ids_items(), chain.loose)]
        total += len(chain.ids()) + len(set(ids) - set(chain.ids()))
        pairs.update((owner, i) for i in ids)
        owners[owner] = sorted(ids, reverse=True)[:max_items]
    return owners, total, len(pairs)


async def unfinished_events() -> list[dict[str, Any]]:
    cursor = Event.get_pymongo_collection().find({"state": {"$ne": "done"}})
    return await cursor.to_list()


async def until_applied(timeout_s: float) -> None:
    """Wait (at most `timeout_s`) until no event is left unfinished, applied by whichever
    workers are running; `assert_applied_by` then says whether they did it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await unfinished_events():
            return
        await asyncio.sleep(0.05)


async def assert_applied_by(workers: list[Worker], h: Harness) -> None:
    """The (stopped) `workers` applied every recorded event themselves, before anyone drained
    for them: none is left, their own counts add up to every event, and a drain finds nothing."""
    left = await unfinished_events()
    assert left == [], f"the racing workers left {len(left)} events, e.g. {left[:2]}"
    done = await Event.get_pymongo_collection().count_documents({"state": "done"})
    assert sum(w.applied for w in workers) == done > 0
    assert await h.drain() == 0


def worker_env(settings: Settings) -> dict[str, str]:
    assert settings.mongodb_url is not None
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TIMELINE_", "MONGODB_", "HYBRID_"))
    }
    env.update(
        MONGODB_URL=settings.mongodb_url,
        MONGODB_DB=settings.mongodb_db,
        TIMELINE_STRATEGY=settings.timeline_strategy,
        TIMELINE_MAX=str(settings.timeline_max),
        HYBRID_THRESHOLD=str(settings.hybrid_threshold),
    )
    return env


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`timeline ARGS` as a real process (`python -m entrypoints`), output captured; bounded
    in time."""
    return subprocess.run(
        [sys.executable, "-m", "entrypoints", *args],
        env=env,
        cwd=cwd,  # no developer .env is read from here
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_worker(
    settings: Settings, name: str, log_dir: Path, lease_s: float, *extra: str
) -> subprocess.Popen[bytes]:
    """`python -m fanout` as a real process (its own interpreter, its own client)."""
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it open)
    return subprocess.Popen(
        [sys.executable, "-m", "fanout", "--name", name, "--lease-seconds", str(lease_s), *extra],
        env=worker_env(settings),
        cwd=log_dir,  # no developer .env is read from here
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout_s)


async def random_workload(
    h: Harness, rng: random.Random, users: int, operations: int, *, drain_every: int = 0
) -> None:
    """Random posts, deletes, friend and unfriend between `users` users, through the API.
    With `drain_every`, the harness's own worker drains the outbox that often."""
    handles = [f"user{i}" for i in range(users)]
    for handle in handles:
        await h.user(handle)
    mine: dict[str, list[str]] = defaultdict(list)
    friends: set[frozenset[str]] = set()
    for i in range(operations):
        a, b = rng.sample(handles, 2)
        roll = rng.random()
        if roll < 0.4:
            mine[a].append((await h.post(a, f"{a} #{i}"))["id"])
        elif roll < 0.55 and mine[a]:
            await h.delete(a, mine[a].pop(rng.randrange(len(mine[a]))))
        elif roll < 0.8:
            await h.befriend(a, b)
            friends.add(frozenset((a, b)))
        elif friends:
            x, y = sorted(rng.choice(sorted(friends, key=sorted)))
            await h.unfriend(x, y)
            friends.discard(frozenset((x, y)))
        if drain_every and i % drain_every == drain_every - 1:
            await h.drain()
