"""Fencing (issue 8, item 6): a worker that stalls past its lease must write nothing once it
resumes, whatever handler it was in, and a heartbeat that cannot renew must stop the handler.

A whole-process stall (GC, SIGSTOP, an overloaded host) is faked in one event loop: the stalled
worker's handler *and* its heartbeat wait on one gate, so its lease runs out in the database
while a second worker takes the event over and applies the author's later events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from app.strategies import recipients_embedded
from app.strategies.materialized import timelines
from fanout.worker import Worker
from tests.harness import Harness
from tests.worker_workload import reference_timelines, unfinished_events

MAX = 3
# Short leases so that a stall outlives one within a test; renewals come every third of it.
LEASE_S = 1.0
pytestmark = pytest.mark.parametrize("timeline_max", [MAX])


async def assert_model(h: Harness, ids: dict[str, ObjectId]) -> None:
    expected = await reference_timelines(MAX)
    for handle, uid in ids.items():
        assert await h.ctx.strategy.timeline_ids(uid) == expected[uid], handle


# fanout_on_read derives nothing: nothing of it can leak.
@pytest.mark.parametrize("strategy", ["receiver_copies", "recipients_embedded"])
async def test_a_backfill_stalled_past_its_lease_does_not_land_after_an_unfriend(
    h: Harness, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = {name: ObjectId((await h.user(name))["id"]) for name in ("ann", "bob")}
    for i in range(2):
        await h.post("ann", f"ann {i}")
        await h.post("bob", f"bob {i}")
    await h.drain()
    await h.befriend("ann", "bob")  # two backfill events: ann's statuses to bob, bob's to ann

    gate = asyncio.Event()
    stalled = asyncio.Event()
    # Both handlers read the truth, then write: the stall comes between the two, which is where
    # a paused worker does harm (what it writes is what it read before the unfriend).
    # receiver_copies' backfill reads its window in MaterializedTimelines._befriend_window.
    module: Any = timelines if strategy == "receiver_copies" else recipients_embedded
    name = "newest_statuses" if strategy == "receiver_copies" else "window_floor"
    read = getattr(module, name)

    async def stalling_read(*args: Any) -> Any:
        result = await read(*args)
        if not stalled.is_set():  # the first backfill only: the stalled worker's
            stalled.set()
            await gate.wait()
        return result

    monkeypatch.setattr(module, name, stalling_read)
    slow = Worker(h.ctx, name="slow", lease_s=LEASE_S)
    renew = slow._renew

    async def stalled_renew(*args: Any, **kwargs: Any) -> bool:
        await gate.wait()  # the whole process is paused: no heartbeat either
        return await renew(*args, **kwargs)

    monkeypatch.setattr(slow, "_renew", stalled_renew)
    slow_task = asyncio.create_task(slow.process_one())
    await asyncio.wait_for(stalled.wait(), 10)

    # Meanwhile: the friendship ends, and a second worker applies everything once the stalled
    # worker's lease has run out (the backfill event first: events of an author run in order).
    await h.unfriend("ann", "bob")
    fast = Worker(h.ctx, name="fast", lease_s=LEASE_S)
    deadline = time.monotonic() + 10 * LEASE_S
    while await unfinished_events():
        assert time.monotonic() < deadline, await unfinished_events()
        if not await fast.process_one():
            await asyncio.sleep(0.1)
    await assert_model(h, ids)  # neither sees the other

    # The stalled worker wakes up: it must see that its lease is gone and write nothing.
    gate.set()
    assert await asyncio.wait_for(slow_task, 10)
    await assert_model(h, ids)  # still: nothing of the stalled backfill landed
    assert await unfinished_events() == []


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_a_heartbeat_that_cannot_renew_stops_the_handler(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewal errors (a database this worker cannot reach, while others can) are retried only
    until the lease runs out: past it another worker may own the event, so the handler is
    stopped rather than left running unfenced."""
    await h.user("ann")
    await h.post("ann", "slow")
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(author_id: ObjectId, status_id: ObjectId) -> None:
        started.set()
        try:
            await asyncio.sleep(30 * LEASE_S)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(h.ctx.strategy, "apply_posted", slow)
    worker = Worker(h.ctx, name="cut-off", lease_s=LEASE_S)

    async def unreachable(*args: Any, **kwargs: Any) -> bool:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(worker, "_renew", unreachable)
    began = time.monotonic()
    assert await asyncio.wait_for(worker.process_one(), 10 * LEASE_S)
    assert started.is_set() and cancelled.is_set()
    assert time.monotonic() - began < 3 * LEASE_S
