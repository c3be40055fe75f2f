"""Worker claims, in-process and deterministic: per-author mutual exclusion, lease expiry,
per-author order, fencing of a worker that lost its lease, and the resumable fan-out."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId

from app.pipeline import checkpoint
from app.storage.models import AuthorLease, Event, utcnow
from app.strategies.materialized import FANOUT_BATCH
from fanout.worker import LeaseLost, Worker
from tests.harness import Harness
from tests.worker_workload import bulk_befriend, bulk_users

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])


async def expire_leases_of(name: str) -> None:
    """What the passing of LEASE_S does to a crashed worker's leases (a fake clock)."""
    past = utcnow() - timedelta(seconds=1)
    await AuthorLease.get_pymongo_collection().update_many(
        {"owner": name}, {"$set": {"until": past}}
    )
    await Event.get_pymongo_collection().update_many(
        {"lease_owner": name, "state": "pending"}, {"$set": {"lease_until": past}}
    )


async def test_one_author_is_held_by_one_worker_at_a_time(h: Harness) -> None:
    ann = ObjectId((await h.user("ann"))["id"])
    bob = ObjectId((await h.user("bob"))["id"])
    await h.user("cat")
    for i in range(3):
        await h.post("ann", f"ann {i}")
    await h.post("bob", "bob 0")
    w1, w2, w3 = (Worker(h.ctx, name=n) for n in ("w1", "w2", "w3"))
    first = await w1.claim()
    assert first is not None and first["author_id"] == ann
    second = await w2.claim()
    assert second is not None and second["author_id"] == bob  # never a second one of ann's
    assert await w3.claim() is None  # both authors are held
    # w1 dies: when its leases expire, ann's oldest event is taken again (and only that one).
    await expire_leases_of("w1")
    again = await w3.claim()
    assert again is not None and again["_id"] == first["_id"]
    assert again["attempts"] == 2
    assert await w1.claim() is None  # w1 is back, but w3 now holds ann
    owners = {d["_id"]: d["owner"] async for d in h.ctx.store.author_leases.find()}
    assert owners == {ann: "w3", bob: "w2"}


async def test_events_of_one_author_run_in_order(h: Harness) -> None:
    ann = ObjectId((await h.user("ann"))["id"])
    for i in range(4):
        await h.post("ann", f"ann {i}")
    ids = [e["_id"] async for e in h.ctx.store.events.find({"author_id": ann})]
    worker = Worker(h.ctx, name="w")
    applied = []
    for _ in ids:
        assert await worker.process_one()
        done = await h.ctx.store.events.find_one(
            {"state": "done", "_id": {"$nin": applied}}, sort=[("_id", 1)]
        )
        assert done is not None
        applied.append(done["_id"])
    assert applied == sorted(ids)
    assert not await worker.process_one()
    # The worker released the author when it ran out of events.
    assert await h.ctx.store.author_leases.count_documents({}) == 0


async def test_a_worker_that_lost_its_lease_stops_writing(h: Harness) -> None:
    """Taken over while its local deadline still runs: its checkpoint stops it after one batch
    (a worker paused past the deadline writes nothing: tests/test_worker_lease_fence.py)."""
    author = ObjectId((await h.user("ann"))["id"])
    friends = await bulk_users(2 * FANOUT_BATCH, "f")
    await bulk_befriend(author, friends)
    status = await h.post("ann", "to many")
    slow = Worker(h.ctx, name="slow")
    event = await slow.claim()
    assert event is not None
    # `slow` stalls past its lease; another worker takes the event over.
    await expire_leases_of("slow")
    fast = Worker(h.ctx, name="fast")
    assert (await fast.claim() or {}).get("_id") == event["_id"]
    with pytest.raises(LeaseLost):
        await slow._apply(event)  # its first checkpoint finds the lease gone
    copies = await h.ctx.store.timeline_entries.count_documents(
        {"status_id": ObjectId(status["id"])}
    )
    assert copies == FANOUT_BATCH  # one batch written, then it stopped
    stored = await h.ctx.store.events.find_one({"_id": event["_id"]})
    assert stored is not None and stored["lease_owner"] == "fast" and stored["state"] == "pending"


class Crash(Exception):
    pass


async def test_a_fanout_resumes_after_its_last_batch(h: Harness) -> None:
    author = ObjectId((await h.user("ann"))["id"])
    friends = await bulk_users(2 * FANOUT_BATCH + 500, "f")
    await bulk_befriend(author, friends)
    status = ObjectId((await h.post("ann", "to many"))["id"])
    saved: list[ObjectId] = []

    async def save_then_crash(last: ObjectId) -> None:
        saved.append(last)
        if len(saved) == 2:
            raise Crash  # the process dies right after its second checkpoint

    token = checkpoint.current.set(checkpoint.Checkpoint(None, save_then_crash))
    try:
        with pytest.raises(Crash):
            await h.ctx.strategy.apply_posted(author, status)
    finally:
        checkpoint.current.reset(token)
    entries = h.ctx.store.timeline_entries
    assert await entries.count_documents({"status_id": status}) == 2 * FANOUT_BATCH
    resumed: list[ObjectId] = []

    async def save(last: ObjectId) -> None:
        resumed.append(last)

    token = checkpoint.current.set(checkpoint.Checkpoint(saved[-1], save))
    try:
        await h.ctx.strategy.apply_posted(author, status)
    finally:
        checkpoint.current.reset(token)
    assert resumed == []  # only the last, partial batch was left: no checkpoint after it
    assert await entries.count_documents({"status_id": status}) == len(friends) + 1
    owners = {e["owner_id"] async for e in entries.find({"status_id": status})}
    assert owners == {author, *friends}


async def test_the_heartbeat_keeps_a_long_event_and_gives_up_a_lost_one(h: Harness) -> None:
    await h.user("ann")
    await h.post("ann", "slow")
    await h.post("ann", "slower")
    release = asyncio.Event()
    started = asyncio.Event()
    cancelled = []

    async def slow(author_id: ObjectId, status_id: ObjectId) -> None:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(status_id)
            raise

    h.ctx.strategy.apply_posted = slow  # type: ignore[method-assign]
    lease_s = 0.3
    worker = Worker(h.ctx, name="slow", lease_s=lease_s)
    other = Worker(h.ctx, name="other", lease_s=lease_s)
    first = asyncio.create_task(worker.process_one())
    await started.wait()
    # Several lease periods later the event is still this worker's: the heartbeat renewed it.
    for _ in range(4):
        await asyncio.sleep(lease_s)
        assert await other.claim() is None
    release.set()
    assert await first
    done = await h.ctx.store.events.count_documents({"state": "done"})
    assert done == 1
    # Now the lease is taken away while the handler runs: the heartbeat notices and cancels it.
    release.clear()
    started.clear()
    second = asyncio.create_task(worker.process_one())
    await started.wait()
    await h.ctx.store.events.update_one({"state": "pending"}, {"$set": {"lease_owner": "thief"}})
    assert await second  # it handled the loss (no exception), without marking anything
    assert len(cancelled) == 1
    stored = await h.ctx.store.events.find_one({"state": "pending"})
    assert stored is not None and stored["lease_owner"] == "thief"
