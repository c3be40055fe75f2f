"""receiver_copies' refills under pressure (issue 8, item 1): a deleted status must leave every
timeline whatever happens to the refills it owes, a refill must finish while friends keep
posting, and losing such races must never park an event as dead."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from bson import ObjectId

import app.pipeline.queue
from app.pipeline.queue import MAX_ATTEMPTS
from app.strategies.materialized import Unsettled
from fanout.worker import Worker
from tests.harness import Harness
from tests.worker_workload import reference_timelines, unfinished_events

MAX = 3
pytestmark = [
    pytest.mark.parametrize("timeline_max", [MAX]),
    pytest.mark.parametrize("strategy", ["receiver_copies"]),
]
# Posts the racing friend makes at most (one per rebuild pass), so that the test ends.
RACING_POSTS = 30
# A drained outbox is reached well within this (contention retries wait ~CONTENTION_RETRY_S).
SETTLE_S = 60.0


class Crash(Exception):
    pass


async def trimmed_reader_holding_a_copy(h: Harness) -> tuple[dict[str, ObjectId], ObjectId]:
    """ann's newest status `s` is in the timelines of rea (trimmed: it lost older entries) and
    of new (never trimmed); fri, a friend of rea only, posts a lot."""
    ids = {n: ObjectId((await h.user(n))["id"]) for n in ("ann", "rea", "new", "fri")}
    await h.befriend("ann", "rea")
    await h.befriend("ann", "new")
    await h.befriend("fri", "rea")
    for i in range(MAX + 1):
        await h.post("fri", f"fri {i}")
    status = ObjectId((await h.post("ann", "soon deleted"))["id"])
    await h.drain()
    await h.ctx.strategy.timelines.trim(ids["rea"])  # type: ignore[attr-defined]
    meta = await h.ctx.store.timeline_meta.find_one({"owner_id": ids["rea"]})
    assert meta is not None and meta["trimmed"]
    assert status in await h.ctx.strategy.timeline_ids(ids["rea"])
    return ids, status


async def drain_fully(h: Harness) -> None:
    """Apply every event, waiting out short retries; fail if that takes longer than SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while await unfinished_events():
        assert time.monotonic() < deadline, await unfinished_events()
        if not await h.drain():
            await asyncio.sleep(0.05)


async def assert_model(ids: dict[str, ObjectId], h: Harness) -> None:
    expected = await reference_timelines(MAX)
    for handle, uid in ids.items():
        assert await h.ctx.strategy.timeline_ids(uid) == expected[uid], handle


async def test_a_delete_leaves_every_timeline_while_friends_keep_posting(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, status = await trimmed_reader_holding_a_copy(h)
    strategy: Any = h.ctx.strategy
    reconcile = strategy.timelines.reconcile
    posted = 0

    async def posting_between_passes(user_id: ObjectId) -> int:
        nonlocal posted
        changed = int(await reconcile(user_id))
        if posted < RACING_POSTS:  # a friend of the reader posts during every pass
            posted += 1
            await h.post("fri", f"racing {posted}")
        return changed

    monkeypatch.setattr(strategy.timelines, "reconcile", posting_between_passes)
    await h.delete("ann", str(status))
    await h.drain()
    assert posted > 0  # the refill did race the posts
    entries = h.ctx.store.timeline_entries
    assert await entries.count_documents({"status_id": status}) == 0
    await drain_fully(h)
    assert await h.ctx.store.events.count_documents({"state": "dead"}) == 0
    await assert_model(ids, h)


async def test_a_delete_whose_refill_fails_still_removes_every_copy(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refill that fails (a crash, a database error) comes after the copies went; the retry
    still refills the trimmed reader, although no copy is left to say it was a holder."""
    ids, status = await trimmed_reader_holding_a_copy(h)
    strategy: Any = h.ctx.strategy
    rebuild = strategy.timelines.rebuild

    async def crash(user_id: ObjectId) -> int:
        raise Crash

    monkeypatch.setattr(strategy.timelines, "rebuild", crash)
    await h.delete("ann", str(status))
    with pytest.raises(Crash):
        await strategy.apply_deleted(ids["ann"], status)
    entries = h.ctx.store.timeline_entries
    assert await entries.count_documents({"status_id": status}) == 0
    monkeypatch.setattr(strategy.timelines, "rebuild", rebuild)
    await strategy.apply_deleted(ids["ann"], status)  # the retry
    await assert_model(ids, h)
    owed = await h.ctx.store.timeline_meta.count_documents({"owed": status})
    assert owed == 0  # every refill owed was made


async def test_contention_is_retried_and_never_parks_an_event(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Dead" is for poison events: an event that keeps losing races (a refill that never
    settles, a write conflict) is retried until it goes through."""
    await h.user("ann")
    await h.post("ann", "contended")
    losses = MAX_ATTEMPTS + 2
    strategy: Any = h.ctx.strategy
    apply_posted = strategy.apply_posted
    calls = 0

    async def losing_races(author_id: ObjectId, status_id: ObjectId) -> None:
        nonlocal calls
        calls += 1
        if calls <= losses:
            raise Unsettled("raced")
        await apply_posted(author_id, status_id)

    monkeypatch.setattr(strategy, "apply_posted", losing_races)
    monkeypatch.setattr(app.pipeline.queue, "BACKOFF_BASE_S", 0.01)  # failures would retry as fast
    worker = Worker(h.ctx)
    events = h.ctx.store.events
    deadline = time.monotonic() + SETTLE_S
    while await events.count_documents({"state": {"$in": ["pending", "staged"]}}):
        assert time.monotonic() < deadline
        if not await worker.process_one():
            await asyncio.sleep(0.05)
    assert calls == losses + 1
    event = await h.ctx.store.events.find_one({})
    assert event is not None and event["state"] == "done"
