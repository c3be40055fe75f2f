"""The claim's own logic, in-process: which event of an author it takes (the oldest waiting one,
in `_id` order; none while that one backs off; a young staged one skipped, as a write still in
flight), that done events are never candidates, and that the claimed event it returns is the
stored document (it is built locally from the conditional update, not read back)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from app.storage.models import Event, utcnow
from fanout.worker import Worker
from tests.harness import Harness

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])


TIMES = ("lease_until", "started_at", "created_at")


def events() -> AsyncCollection[Any]:
    return Event.get_pymongo_collection()


async def test_the_claimed_event_is_the_stored_document(h: Harness) -> None:
    await h.user("ann")
    await h.post("ann", "one")
    worker = Worker(h.ctx, name="w1")
    claimed = await worker.claim()
    assert claimed is not None
    stored = await events().find_one({"_id": claimed["_id"]})
    assert stored is not None
    # Times round to milliseconds in BSON; everything else is equal as it is.
    for key in TIMES:
        assert abs((claimed[key] - stored[key]).total_seconds()) < 0.001
    rest = {
        k: v for k, v in claimed.items() if k not in ("lease_until", "started_at", "created_at")
    }
    assert rest == {k: v for k, v in stored.items() if k in rest} and set(rest) <= set(stored)
    assert stored["lease_owner"] == "w1" and stored["attempts"] == 1


async def test_an_author_backing_off_waits_and_done_events_are_never_claimed(h: Harness) -> None:
    ann = ObjectId((await h.user("ann"))["id"])
    bob = ObjectId((await h.user("bob"))["id"])
    await h.post("ann", "a0")
    await h.post("ann", "a1")
    await h.post("bob", "b0")
    assert await Worker(h.ctx, name="w0").drain() == 3
    await h.post("ann", "a2")
    await h.post("ann", "a3")
    await h.post("bob", "b1")
    first_of_ann = await events().find_one(
        {"author_id": ann, "state": "pending"}, sort=[("_id", 1)]
    )
    assert first_of_ann is not None
    # ann's oldest waiting event failed and backs off: ann's later one must wait too.
    await events().update_one(
        {"_id": first_of_ann["_id"]}, {"$set": {"lease_until": utcnow() + timedelta(hours=1)}}
    )
    worker = Worker(h.ctx, name="w1")
    claimed = await worker.claim()
    assert claimed is not None and claimed["author_id"] == bob
    await worker.release_leases()
    assert await worker.claim() is None  # bob's was taken; ann's waits; the done ones are done


async def test_a_young_staged_event_is_skipped_for_the_next_waiting_one(h: Harness) -> None:
    ann = ObjectId((await h.user("ann"))["id"])
    await h.post("ann", "a0")
    pending = await events().find_one({"author_id": ann, "state": "pending"})
    assert pending is not None
    # An older staged event whose write is still in flight (younger than the grace).
    older = ObjectId.from_datetime(pending["_id"].generation_time - timedelta(seconds=1))
    await events().insert_one(
        {
            "_id": older,
            "kind": "status_posted",
            "author_id": ann,
            "status_id": ObjectId(),
            "state": "staged",
            "attempts": 0,
            "lease_until": None,
            "created_at": utcnow(),
        }
    )
    claimed = await Worker(h.ctx, name="w1").claim()
    assert claimed is not None and claimed["_id"] == pending["_id"]
