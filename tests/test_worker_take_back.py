"""A worker restarted under its name takes back at once what its dead predecessor held
(fanout.claims.take_back, run by fanout.pool.WorkerPool at start), instead of leaving its
in-hand event until the lease expires; a worker of another name leaves it alone."""

from __future__ import annotations

import asyncio

import pytest

from fanout.claims import take_back
from fanout.pool import WorkerPool
from fanout.worker import LEASE_S, Worker
from tests.harness import Harness

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])

# Far below the lease: the event is applied because it was taken back, not because it expired.
WITHIN_S = LEASE_S / 3
POLL_S = 0.05


async def test_a_restarted_worker_takes_back_its_in_hand_event(h: Harness) -> None:
    await h.user("ann")
    await h.user("bob")
    await h.befriend("ann", "bob")
    await h.drain()
    status = await h.post("ann", "in hand when the worker died")
    dead = Worker(h.ctx, name="w1")
    event = await dead.claim()  # ... and the process is SIGKILLed mid-event
    assert event is not None and event["status_id"] is not None
    events = h.ctx.queue.events
    assert await take_back(dead.events, dead.leases, "someone-else") == 0
    held = await events.find_one({"_id": event["_id"]})
    assert held is not None and held["lease_owner"] == "w1" and held["state"] == "pending"

    pool = WorkerPool(h.ctx, name="w1")  # its replacement, under the same --name
    task = asyncio.create_task(pool.run())
    try:
        for _ in range(int(WITHIN_S / POLL_S)):
            if (await events.find_one({"_id": event["_id"]}) or {}).get("state") == "done":
                break
            await asyncio.sleep(POLL_S)
    finally:
        pool.handle_exit()
        await asyncio.wait_for(task, 10)
    done = await events.find_one({"_id": event["_id"]})
    assert done is not None and done["state"] == "done", done
    assert done["attempts"] == 2  # the dead claim still counts
    assert status["id"] in await h.timeline_ids("bob")
