"""The fence of a worker whose event was taken over, on every strategy that writes derived data
in a fan-out: paused past its local deadline, it writes nothing (the check in
`checkpoint.fenced()`); taken over while its local deadline still runs (its clock behind the
other worker's), it writes at most one batch, stopped by its next checkpoint (or at once by
`fenced_write`'s check of the author lease, where the strategy writes in transactions)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from app.pipeline.queued import QueuedEvent, from_doc
from app.storage.models import utcnow
from app.strategies import hybrid
from app.strategies.materialized import timelines
from app.strategies.receiver_copies import entries
from fanout.worker import LeaseLost, Worker
from tests.derived import holders
from tests.harness import Harness
from tests.test_worker_leases import expire_leases_of
from tests.worker_workload import bulk_befriend, bulk_users

STRATEGIES = ["receiver_copies", "inbox_buckets", "hybrid", "recipients_embedded"]
pytestmark = [
    pytest.mark.parametrize("strategy", STRATEGIES),
    # No large authors: hybrid fans this author's statuses out like receiver_copies.
    pytest.mark.parametrize("hybrid_threshold", [1000]),
]
# Receivers per batch here (FANOUT_BATCH is 1,000): the same path, at a test's size.
BATCH = 10
FRIENDS = 2 * BATCH + 5  # three batches


async def taken_over(h: Harness, monkeypatch: pytest.MonkeyPatch) -> tuple[QueuedEvent, ObjectId]:
    """A post to FRIENDS friends whose event `slow` claimed and `fast` then took over."""
    for module in (timelines, entries, hybrid):
        monkeypatch.setattr(module, "FANOUT_BATCH", BATCH)
    author = ObjectId((await h.user("ann"))["id"])
    await bulk_befriend(author, await bulk_users(FRIENDS, "f"))
    status = ObjectId((await h.post("ann", "to many"))["id"])
    event = await Worker(h.ctx, name="slow").claim()
    assert event is not None and event["status_id"] == status
    await expire_leases_of("slow")  # it stalled past its lease in the database's clock
    fast = await Worker(h.ctx, name="fast").claim()
    assert fast is not None and fast["_id"] == event["_id"]
    return event, status


async def test_a_worker_paused_past_its_deadline_writes_nothing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    event, status = await taken_over(h, monkeypatch)
    before = await holders(h.ctx.store, h.ctx.strategy.name, status)
    # Resumed after its pause: the local deadline, set from the claim's lease, is behind it.
    paused = from_doc({**event, "lease_until": utcnow() - timedelta(seconds=1)})
    with pytest.raises(LeaseLost):
        await Worker(h.ctx, name="slow")._apply(paused)
    assert await holders(h.ctx.store, h.ctx.strategy.name, status) == before


async def test_a_worker_taken_over_within_its_deadline_stops_at_its_checkpoint(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    event, status = await taken_over(h, monkeypatch)
    before = await holders(h.ctx.store, h.ctx.strategy.name, status)
    assert before is not None
    with pytest.raises(LeaseLost):
        await Worker(h.ctx, name="slow")._apply(event)
    after = await holders(h.ctx.store, h.ctx.strategy.name, status)
    assert after is not None and len(after) - len(before) <= BATCH
    stored = await h.ctx.store.events.find_one({"_id": event["_id"]})
    assert stored is not None and stored["lease_owner"] == "fast" and stored["state"] == "pending"
