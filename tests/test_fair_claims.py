"""Fair fan-out (fanout.claims, Queue.candidates): one author's backlog delays only that author.
The order of claims is checked, not timed (`python -m benchmarks fair` measures the lag)."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from app.pipeline.queue import CANDIDATE_SCAN
from app.pipeline.queued import BACKLOG_TOP_AUTHORS
from app.storage.models import utcnow
from fanout.worker import Worker
from tests.harness import Harness

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])

# The heavy author's backlog in the order tests (oldest-first claimed all of it first), and in
# the hiding test: more than one candidate query reads.
BACKLOG = 10
HIDING_BACKLOG = CANDIDATE_SCAN + 20


def event(author: ObjectId) -> dict[str, Any]:
    return {
        "kind": "status_posted",
        "author_id": author,
        "status_id": ObjectId(),
        "state": "pending",
        "attempts": 0,
        "lease_until": None,
        "created_at": utcnow(),
    }


async def backlog(h: Harness, n: int = BACKLOG) -> tuple[ObjectId, list[ObjectId]]:
    """A heavy author's `n` events, then one event of each of three others."""
    heavy, light = ObjectId(), [ObjectId() for _ in range(3)]
    await h.ctx.store.events.insert_many([event(heavy) for _ in range(n)])
    await h.ctx.store.events.insert_many([event(a) for a in light])
    return heavy, light


async def claim_all(worker: Worker) -> list[dict[str, Any]]:
    """Claim and complete (without applying: the order is the point) until nothing is left."""
    claimed = []
    while (ev := await worker.claim()) is not None:
        claimed.append(dict(ev))
        await worker.events.complete(ev["_id"], worker.name)
        await worker.claims.applied(ev["author_id"])
    return claimed


async def test_authors_are_served_in_rounds_not_oldest_event_first(h: Harness) -> None:
    heavy, light = await backlog(h)
    claimed = await claim_all(Worker(h.ctx, name="w1"))
    authors = [c["author_id"] for c in claimed]
    # The first round serves every author once (the oldest event's author first); the heavy
    # author's backlog follows. Oldest-first served the heavy author BACKLOG times before them.
    assert authors[:4] == [heavy, *light]
    assert authors[4:] == [heavy] * (BACKLOG - 1)
    # Each author's events still run in `_id` order.
    heavy_ids = [c["_id"] for c in claimed if c["author_id"] == heavy]
    assert heavy_ids == sorted(heavy_ids)


async def test_a_busy_authors_backlog_does_not_hide_the_others(h: Harness) -> None:
    heavy, light = await backlog(h, HIDING_BACKLOG)
    holder = Worker(h.ctx, name="holder")
    first = await holder.claim()  # holds the heavy author (its oldest event) and keeps it
    assert first is not None and first["author_id"] == heavy
    # Every one of the oldest CANDIDATE_SCAN waiting events is the held author's.
    other = Worker(h.ctx, name="other")
    claimed = await claim_all(other)
    assert sorted(c["author_id"] for c in claimed) == sorted(light)


async def test_a_new_author_waits_one_round_at_most(h: Harness) -> None:
    await backlog(h)
    worker = Worker(h.ctx, name="w1")
    for _ in range(6):  # the first round, then the heavy author alone
        ev = await worker.claim()
        assert ev is not None
        await worker.events.complete(ev["_id"], worker.name)
        await worker.claims.applied(ev["author_id"])
    late = ObjectId()
    await h.ctx.store.events.insert_one(event(late))
    ev = await worker.claim()
    assert ev is not None and ev["author_id"] == late


async def test_health_and_metrics_name_the_largest_backlogs(h: Harness) -> None:
    await h.user("heavy")
    await h.user("light")
    for i in range(BACKLOG_TOP_AUTHORS + 2):
        await h.user(f"once{i}")
        await h.post(f"once{i}", "one")
    for i in range(3):
        await h.post("heavy", f"post {i}")
    await h.post("light", "one")
    await h.post("light", "two")
    r = await h.client.get("/health")
    top = r.json()["backlog_authors"]
    assert len(top) == BACKLOG_TOP_AUTHORS
    assert top[:2] == [{"author": "heavy", "pending": 3}, {"author": "light", "pending": 2}]
    metrics = (await h.client.get("/metrics")).text
    assert 'timeline_backlog_author_events{author="heavy"} 3.0' in metrics
    assert metrics.count("timeline_backlog_author_events{") == BACKLOG_TOP_AUTHORS
    await h.drain()
    assert (await h.client.get("/health")).json()["backlog_authors"] == []
    assert "timeline_backlog_author_events{" not in (await h.client.get("/metrics")).text
