"""`timeline check` finds injected drift and `timeline rebuild` repairs it, on a database
filled by a random workload (receiver_copies: copies; recipients_embedded: audiences)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from bson import ObjectId

from app import maintenance
from app.storage.models import Friendship, User, utcnow
from app.strategies.inbox_buckets import InboxBuckets
from fanout import switch
from fanout.leases import AuthorLeases
from tests.harness import Harness
from tests.worker_workload import random_workload, run_cli, worker_env

SEED = 5
USERS = 10
OPERATIONS = 100


async def user_id(handle: str) -> ObjectId:
    doc = await User.get_pymongo_collection().find_one({"handle": handle})
    assert doc is not None
    return ObjectId(doc["_id"])


async def friends_of(uid: ObjectId) -> set[ObjectId]:
    edges = Friendship.get_pymongo_collection().find({"user_id": uid})
    return {e["friend_id"] async for e in edges}


async def rebuild(
    h: Harness, handle: str | None = None, progress: Callable[[int, int], None] | None = None
) -> int:
    """What `timeline rebuild` runs: each user's rebuild under that author's lease."""
    users = await maintenance.user_ids(h.ctx.store, handle)
    return await switch.rebuild_leased(h.ctx.store, h.ctx.strategy, users, progress)


async def filled(h: Harness) -> None:
    await random_workload(h, random.Random(SEED), USERS, OPERATIONS, drain_every=25)
    await h.drain()
    report = await maintenance.check(h.ctx)
    assert report.ok and report.checked == USERS


async def a_user_with_a_timeline(h: Harness, at_least: int) -> tuple[str, ObjectId, list[str]]:
    for i in range(USERS):
        ids = await h.timeline_ids(f"user{i}") if f"user{i}" in h.tokens else []
        if len(ids) >= at_least:
            return f"user{i}", await user_id(f"user{i}"), ids
    raise AssertionError("the workload left no timeline long enough")


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_copies_drift_is_reported_and_rebuilt(h: Harness, tmp_path: Path) -> None:
    await filled(h)
    entries = h.ctx.store.timeline_entries
    handle, uid, ids = await a_user_with_a_timeline(h, 3)
    # Drift 1: two copies lost.
    lost = [ObjectId(i) for i in ids[:2]]
    await entries.delete_many({"owner_id": uid, "status_id": {"$in": lost}})
    # Drift 2: a copy of a status that does not exist, and one of a stranger's status.
    other = "user0" if handle != "user0" else "user1"
    oid = await user_id(other)
    allowed = {oid, *await friends_of(oid)}
    stranger = await h.ctx.store.statuses.find_one({"author_id": {"$nin": list(allowed)}})
    assert stranger is not None
    bogus = [
        {"_id": ObjectId(), "author_id": oid, "author": other, "text": "never posted"},
        stranger,
    ]
    await entries.insert_many(
        [
            {
                "owner_id": oid,
                "status_id": s["_id"],
                "author_id": s["author_id"],
                "author": s["author"],
                "text": s["text"],
                "created_at": s["_id"].generation_time,
            }
            for s in bogus
        ]
    )
    report = await maintenance.check(h.ctx)
    drift = {d.handle: (sorted(d.missing), sorted(d.extra)) for d in report.drifted}
    assert drift == {
        handle: (sorted(map(str, lost)), []),
        other: ([], sorted(str(s["_id"]) for s in bogus)),
    }
    # The commands, as an operator runs them.
    env = worker_env(h.ctx.settings)
    checked = await asyncio.to_thread(run_cli, env, tmp_path, "check")
    assert checked.returncode == 1, checked.stderr
    assert f"drift for {handle}: 2 missing" in checked.stdout
    assert f"drift for {other}: 0 missing" in checked.stdout and "2 extra" in checked.stdout
    assert f"checked {USERS} timelines (receiver_copies): 2 drifted" in checked.stdout
    sampled = await asyncio.to_thread(run_cli, env, tmp_path, "check", "--sample", "3")
    assert "checked 3 timelines" in sampled.stdout
    unknown = await asyncio.to_thread(run_cli, env, tmp_path, "rebuild", "--user", "nobody")
    assert unknown.returncode == 2 and "no user 'nobody'" in unknown.stderr
    rebuilt = await asyncio.to_thread(run_cli, env, tmp_path, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt receiver_copies: 4 documents changed" in rebuilt.stdout
    again = await asyncio.to_thread(run_cli, env, tmp_path, "check")
    assert again.returncode == 0, again.stdout
    assert f"checked {USERS} timelines (receiver_copies): 0 drifted" in again.stdout
    assert await rebuild(h) == 0  # idempotent


@pytest.mark.parametrize("strategy", ["recipients_embedded"])
async def test_audience_drift_is_reported_and_rebuilt(h: Harness) -> None:
    await filled(h)
    statuses = h.ctx.store.statuses
    # Drift 1: a friend stripped from the audience of a status (the friend misses it).
    victim = await statuses.find_one({"audience.1": {"$exists": True}}, sort=[("_id", -1)])
    assert victim is not None
    friend = next(a for a in victim["audience"] if a != victim["author_id"])
    await statuses.update_one({"_id": victim["_id"]}, {"$pull": {"audience": friend}})
    # Drift 2: a stranger added to the audience of another status (the stranger sees it).
    target = await statuses.find_one({"_id": {"$ne": victim["_id"]}}, sort=[("_id", -1)])
    assert target is not None
    allowed = {target["author_id"], *await friends_of(target["author_id"])}
    users = h.ctx.store.users.find({"_id": {"$nin": list(allowed)}})
    stranger = (await users.to_list())[0]
    await statuses.update_one({"_id": target["_id"]}, {"$push": {"audience": stranger["_id"]}})
    handles = {u["_id"]: u["handle"] async for u in h.ctx.store.users.find({}, {"handle": 1})}
    report = await maintenance.check(h.ctx)
    drift = {d.handle: (d.missing, d.extra) for d in report.drifted}
    assert drift == {
        handles[friend]: ([str(victim["_id"])], []),
        handles[stranger["_id"]]: ([], [str(target["_id"])]),
    }
    # Rebuilding one author repairs that author's statuses only.
    await rebuild(h, handles[victim["author_id"]])
    left = await maintenance.check(h.ctx)
    assert [d.handle for d in left.drifted] == [handles[stranger["_id"]]]
    progress: list[tuple[int, int]] = []
    assert await rebuild(h, None, lambda i, n: progress.append((i, n))) > 0
    assert progress[-1] == (USERS, USERS)
    assert (await maintenance.check(h.ctx)).ok
    assert await rebuild(h) == 0  # idempotent


@pytest.mark.parametrize("strategy", ["inbox_buckets"])
@pytest.mark.parametrize("inbox_bucket_size", [2])
async def test_bucket_drift_is_reported_and_rebuilt(h: Harness) -> None:
    await filled(h)
    buckets = h.ctx.store.inbox_buckets
    strategy = h.ctx.strategy
    assert isinstance(strategy, InboxBuckets)
    for owner in await buckets.distinct("owner_id"):  # every entry in a chain: no loose ones
        await strategy.fold(owner)
    handle, uid, ids = await a_user_with_a_timeline(h, 3)
    # Drift 1: an entry lost from a bucket below the head.
    lost = ObjectId(ids[-1])
    await buckets.update_one({"owner_id": uid, "items.s": lost}, {"$pull": {"items": {"s": lost}}})
    # Drift 2: an entry of a status that does not exist, in another reader's head.
    other = "user0" if handle != "user0" else "user1"
    oid = await user_id(other)
    bogus = ObjectId()
    await buckets.update_one(
        {"_id": oid}, {"$push": {"items": {"$each": [{"s": bogus, "a": oid}], "$position": 0}}}
    )
    report = await maintenance.check(h.ctx)
    drift = {d.handle: (sorted(d.missing), sorted(d.extra)) for d in report.drifted}
    assert drift == {handle: ([str(lost)], []), other: ([], [str(bogus)])}
    assert await rebuild(h) >= 2
    assert (await maintenance.check(h.ctx)).drifted == []
    assert await rebuild(h) == 0  # idempotent


# A lease far shorter than one user's (slowed) rebuild step: without renewals the step's writes
# find it run out (LeaseLost) and the command stops.
SHORT_LEASE_S = 0.6
SLOW_STEP_S = 3 * SHORT_LEASE_S


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_a_rebuild_step_longer_than_the_lease_renews_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.user("ann")
    await h.post("ann", "hello")
    await h.drain()
    ann = await user_id("ann")
    strategy = h.ctx.strategy
    rebuild_user = strategy.rebuild
    taken_meanwhile: list[bool] = []

    async def slow_rebuild(uid: ObjectId) -> int:
        await asyncio.sleep(SLOW_STEP_S)  # a long step (a hybrid crossing, a big timeline)
        # The lease is still this rebuild's: another owner cannot take it.
        taken_meanwhile.append(
            await AuthorLeases(h.ctx.store.author_leases).acquire(
                uid, "another worker", utcnow(), SHORT_LEASE_S
            )
        )
        await h.ctx.store.timeline_entries.delete_many({"owner_id": uid})  # drift to repair
        return await rebuild_user(uid)

    monkeypatch.setattr(strategy, "rebuild", slow_rebuild)
    users = await maintenance.user_ids(h.ctx.store, "ann")
    assert await switch.rebuild_leased(h.ctx.store, strategy, users, lease_s=SHORT_LEASE_S) > 0
    assert taken_meanwhile == [False]
    assert await h.timeline_ids("ann") == [str(i) for i in await maintenance.truth_ids(h.ctx, ann)]
    assert await h.ctx.store.author_leases.count_documents({}) == 0  # released


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_an_interrupted_rebuild_resumes_after_its_last_user(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(h)
    users = await maintenance.user_ids(h.ctx.store)
    strategy = h.ctx.strategy
    rebuild_user = strategy.rebuild
    rebuilt: list[ObjectId] = []

    async def counted(uid: ObjectId) -> int:
        if len(rebuilt) == 3 and not resumed:
            raise Interrupted  # the command dies in its fourth user
        rebuilt.append(uid)
        return await rebuild_user(uid)

    monkeypatch.setattr(strategy, "rebuild", counted)
    resumed = False
    with pytest.raises(Interrupted):
        await switch.rebuild_leased(h.ctx.store, strategy, users, resume_key="rebuild:test")
    resumed = True
    seen: list[int] = []
    await switch.rebuild_leased(
        h.ctx.store, strategy, users, lambda i, n: seen.append(i), resume_key="rebuild:test"
    )
    ordered = [u for u, _ in sorted(users)]
    assert rebuilt == ordered  # each user once: the run resumed after the third
    assert seen == list(range(1, len(users) + 1))  # progress still counts every user
    saved = await h.ctx.store.service_config.find_one({"_id": switch.PROGRESS_ID})
    assert saved is not None and "rebuild:test" not in saved
    # A run that finished leaves nothing to resume: the next one rebuilds every user.
    rebuilt.clear()
    await switch.rebuild_leased(h.ctx.store, strategy, users, resume_key="rebuild:test")
    assert rebuilt == ordered
