"""Derived-data writes cannot wait for ever (issue 8, item 8). On the embedded server a
non-transactional multi-document write that meets a transaction's uncommitted write retries
inside the server until that transaction ends, long after the worker gave up on it; under three
API clients this livelocked the server. Here a transaction holds one of the author's statuses
while a worker applies a backfill over the author's window: the worker must get its event back
within about a lease (the fence's deadline bounds the write, on the server too), and the
write must not land after that."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId

from fanout.worker import Worker
from tests.harness import Harness

MAX = 3
LEASE_S = 1.5
# The worker gives up on the write at the fence's deadline (under a lease) and the server at
# its maxTimeMS, polled every few dozen retries: a few leases at most, far below the client's
# 15 s operation timeout that bounded it before.
GIVES_UP_WITHIN_S = 4 * LEASE_S
pytestmark = [
    pytest.mark.parametrize("timeline_max", [MAX]),
    pytest.mark.parametrize("strategy", ["recipients_embedded"]),
]


async def test_a_backfill_blocked_by_a_transaction_gives_up_in_bounded_time(h: Harness) -> None:
    if not h.ctx.database.supports_transactions:
        pytest.skip("needs a server with transactions")
    ann = ObjectId((await h.user("ann"))["id"])
    bob = ObjectId((await h.user("bob"))["id"])
    posted = [ObjectId((await h.post("ann", f"ann {i}"))["id"]) for i in range(MAX)]
    await h.drain()
    await h.befriend("ann", "bob")
    statuses = h.ctx.store.statuses
    async with h.ctx.database.client.start_session() as session:
        await session.start_transaction()
        # An uncommitted write to ann's newest status, as a slow API transaction would hold.
        await statuses.update_one({"_id": posted[-1]}, {"$set": {"held": True}}, session=session)
        worker = Worker(h.ctx, name="blocked", lease_s=LEASE_S)
        events = h.ctx.store.events
        backfill = {"kind": "friendship_changed", "author_id": ann, "other_id": bob}
        began = time.monotonic()
        steps: list[str] = []  # what each call did and how long it took, should this fail
        while not (await events.find_one(backfill) or {}).get("attempts"):
            step = time.monotonic()
            try:
                outcome = repr(await worker.process_one())
            except Exception as exc:  # a timeout the run loop treats as an outage is fine too
                assert getattr(exc, "timeout", False), exc
                outcome = repr(exc)[:200]
            steps.append(f"{time.monotonic() - step:.2f} s: {outcome}")
        took = time.monotonic() - began
        await session.abort_transaction()
    assert took < GIVES_UP_WITHIN_S, steps
    # It was blocked: ann's backfill towards bob is not done.
    assert (await events.find_one(backfill) or {}).get("state") == "pending"
    # Nothing of the abandoned write lands once the transaction has gone.
    time_after = time.monotonic() + LEASE_S
    while time.monotonic() < time_after:
        doc = await statuses.find_one({"_id": posted[-1]})
        assert doc is not None and bob not in doc["audience"]
    # The event is still owed and goes through now.
    while await worker.process_one():
        pass
    assert await h.ctx.strategy.timeline_ids(bob) == posted[::-1]
    assert ann in (await statuses.find_one({"_id": posted[0]}) or {})["audience"]
