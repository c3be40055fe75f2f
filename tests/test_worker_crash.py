"""The worker under SIGKILL: real `python -m fanout` processes killed in the middle of large
fan-outs (seeded random points), restarted, and the result compared with a reference model."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bson import ObjectId

from app import maintenance
from app.storage.models import Event
from app.storage.store import Collection
from app.strategies.hybrid import low_mark
from app.strategies.inbox_buckets import InboxBuckets
from tests import harness
from tests.harness import running
from tests.worker_workload import (
    bulk_befriend,
    bulk_users,
    copies_by_owner,
    inbox_copies_by_owner,
    kill,
    reference_timelines,
    set_friends,
    start_worker,
    stop,
    unfinished_events,
)

SEED = 20240603
FRIENDS = 2500  # three FANOUT_BATCH batches per status: a kill after the first checkpoint
# lands in the second batch (whose insert the server finishes anyway), so the third is left to
# the resumed fan-out.
KILLS = 4
# Short leases so a killed worker's events are taken over quickly (production default: 30 s).
LEASE_S = 1.0
# Safety bound for waiting on subprocesses, so a broken worker fails the test instead of hanging.
WAIT_LIMIT_S = 180.0


async def wait_for(what: str, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["receiver_copies", "inbox_buckets"])
async def test_sigkill_in_the_middle_of_fanouts(mongo_url: str, tmp_path: Path, name: str) -> None:
    rng = random.Random(SEED)
    # TIMELINE_MAX 5: every status that survives is in every friend's timeline, so a copy lost
    # by a bad resumption shows. inbox_buckets with buckets of 2: kills land in splits too.
    settings = harness.test_settings(
        mongo_url,
        name,
        timeline_max=5,
        inbox_bucket_size=2,  # type: ignore[arg-type]
    )
    events = Event.get_pymongo_collection
    async with running(settings) as h:
        author = ObjectId((await h.user("author"))["id"])
        friends = await bulk_users(FRIENDS, "f")
        rng.shuffle(friends)  # the graph returns friends in no useful order
        await bulk_befriend(author, friends)
        # A workload of one big author: posts, unfriends, a delete, re-friends, more posts.
        posted = [await h.post("author", f"status {i}") for i in range(3)]
        dropped = rng.sample(friends, 10)
        for f in dropped:
            await set_friends(h.ctx, author, f, False)
        posted += [await h.post("author", f"status {i}") for i in range(3, 5)]
        await h.delete("author", posted[1]["id"])
        for f in dropped[:5]:
            await set_friends(h.ctx, author, f, True)
        posted.append(await h.post("author", "status 5"))

        interrupted = []
        procs = []
        try:
            for i in range(KILLS):
                name = f"killed{i}"
                proc = start_worker(settings, name, tmp_path, LEASE_S)
                procs.append(proc)

                async def claimed_or_idle(name: str = name) -> bool:
                    mine = await events().find_one({"lease_owner": name, "state": "pending"})
                    return mine is not None or not await unfinished_events()

                async def checkpointed_or_idle(name: str = name) -> bool:
                    mine = await events().find_one(
                        {"lease_owner": name, "state": "pending", "resume_after": {"$ne": None}}
                    )
                    return mine is not None or not await unfinished_events()

                if i % 2 == 0:  # anywhere in an event
                    await wait_for(f"{name} to claim an event", claimed_or_idle)
                    await asyncio.sleep(rng.uniform(0.05, 0.5))
                else:  # in a fan-out that has saved a checkpoint: its resumption is tested
                    await wait_for(f"{name} to save a checkpoint", checkpointed_or_idle)
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                kill(proc)
                left = await events().find_one({"lease_owner": name, "state": "pending"})
                if left is not None:
                    interrupted.append((left["kind"], left.get("resume_after") is not None))
            final = start_worker(settings, "final", tmp_path, LEASE_S)
            procs.append(final)

            async def drained() -> bool:
                return not await unfinished_events()

            await wait_for("the restarted worker to drain the outbox", drained)
            assert stop(final) == 0, (tmp_path / "final.log").read_text()
        finally:
            for p in procs:
                kill(p)

        # The kills did land in the middle of work (at least one of them in a fan-out).
        assert interrupted, "no kill interrupted an event: the test did not test anything"
        assert any(kind == "status_posted" and resumable for kind, resumable in interrupted)
        # No event stuck: every one applied, none leased, none parked.
        assert await unfinished_events() == []
        assert await events().count_documents({"lease_until": {"$ne": None}}) == 0
        owners = {d["owner"] async for d in h.ctx.store.author_leases.find()}
        assert "final" not in owners  # a clean stop releases its leases; killed ones expire
        # Every timeline equals the reference model, with no duplicate entry.
        expected = await reference_timelines(settings.timeline_max)
        strategy = h.ctx.strategy
        if isinstance(strategy, InboxBuckets):
            copies, total, distinct = await inbox_copies_by_owner(strategy, settings.timeline_max)
        else:
            copies, total, distinct = await copies_by_owner(settings.timeline_max)
        assert total == distinct
        wrong = [u for u, ids in expected.items() if copies.get(u, []) != ids]
        assert wrong == [], f"{len(wrong)} timelines differ from the reference"
        assert len(expected) == FRIENDS + 1
        # ... and the service's own drift check agrees, through the strategy's reads.
        report = await maintenance.check(h.ctx, sample=50)
        assert report.ok and report.checked == 50


CROSSING_FRIENDS = 2500  # a downward crossing copies the window to each: 25 inserts of 500
# The threshold the killed workers run with: its low mark (hybrid.low_mark) is 2,501, so an
# author who became large under CROSSING_FRIENDS crosses down at their next friendship change
# (a raised HYBRID_THRESHOLD applied author by author, as docs/operations.md says).
RAISED_THRESHOLD = 2778
CROSSING_KILLS = 3


async def hybrid_copies(entries: Collection, max_items: int) -> dict[ObjectId, list[ObjectId]]:
    """hybrid's materialized timelines as reads see them once no author is large (capped)."""
    owners: dict[ObjectId, list[ObjectId]] = {}
    cursor = entries.find({}, {"owner_id": 1, "status_id": 1})
    async for e in cursor:
        owners.setdefault(e["owner_id"], []).append(e["status_id"])
    return {o: sorted(ids, reverse=True)[:max_items] for o, ids in owners.items()}


@pytest.mark.slow
async def test_sigkill_in_the_middle_of_a_hybrid_crossing(mongo_url: str, tmp_path: Path) -> None:
    """An author of 2,501 friends (above HYBRID_THRESHOLD 2,500: merged at read time) posts,
    then drops to 2,500 under workers whose threshold was raised to 2,778 (low mark 2,501): the
    downward crossing copies their window to every friend, and the workers applying it are
    killed mid-way, again and again. The retries converge: no large author left, no pair left,
    every timeline equal to the reference model."""
    rng = random.Random(SEED)
    settings = harness.test_settings(
        mongo_url, "hybrid", timeline_max=5, hybrid_threshold=CROSSING_FRIENDS
    )
    raised = settings.model_copy(update={"hybrid_threshold": RAISED_THRESHOLD})  # same database
    assert low_mark(CROSSING_FRIENDS) < CROSSING_FRIENDS < low_mark(RAISED_THRESHOLD)
    async with running(settings) as h:
        author = ObjectId((await h.user("author"))["id"])
        friends = await bulk_users(CROSSING_FRIENDS + 1, "f")
        await bulk_befriend(author, friends)
        # Bulk edges are not counted: the count the API's accepts would have left.
        await h.ctx.store.users.update_one(
            {"_id": author}, {"$set": {"friend_count": len(friends)}}
        )
        states = h.ctx.store.large_authors
        await set_friends(h.ctx, author, friends[-1], True)  # an event: the crossing up
        for i in range(5):
            await h.post("author", f"status {i}")  # merged in, not fanned out
        await h.drain()  # in-process
        assert (await states.find_one({"_id": author}) or {}).get("state") == "large"
        await set_friends(h.ctx, author, friends[0], False)  # 2,500: the crossing down
        interrupted = 0
        procs = []
        try:
            for i in range(CROSSING_KILLS):
                proc = start_worker(raised, f"killed{i}", tmp_path, LEASE_S)
                procs.append(proc)

                async def descending() -> bool:
                    doc = await states.find_one({"_id": author})
                    return (doc or {}).get("state") == "descending" or not (
                        await unfinished_events()
                    )

                await wait_for("the crossing down to start", descending)
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                kill(proc)
                doc = await states.find_one({"_id": author})
                interrupted += (doc or {}).get("state") == "descending"
            final = start_worker(raised, "final", tmp_path, LEASE_S)
            procs.append(final)

            async def drained() -> bool:
                return not await unfinished_events()

            async def final_started() -> bool:
                return "started" in (tmp_path / "final.log").read_text()

            await wait_for("the restarted worker to drain the outbox", drained)
            await wait_for("the restarted worker to start", final_started)  # handles SIGTERM
            assert stop(final) == 0, (tmp_path / "final.log").read_text()
        finally:
            for p in procs:
                kill(p)
        assert interrupted, "no kill interrupted the crossing: the test did not test anything"
        assert await states.find_one({"_id": author}) is None
        assert await h.ctx.store.large_friends.count_documents({}) == 0
        expected = await reference_timelines(settings.timeline_max)
        copies = await hybrid_copies(h.ctx.store.hybrid_entries, settings.timeline_max)
        wrong = [u for u, ids in expected.items() if copies.get(u, []) != ids]
        assert wrong == [], f"{len(wrong)} timelines differ from the reference"
        report = await maintenance.check(h.ctx, sample=50)
        assert report.ok and report.checked == 50
