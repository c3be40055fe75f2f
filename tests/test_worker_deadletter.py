"""A failing event is retried with backoff, parked as dead after MAX_ATTEMPTS, shown by /health
and `timeline events list --dead`, and re-queued by `timeline events retry`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from bson import ObjectId
from prometheus_client import REGISTRY

from app.pipeline.queue import MAX_ATTEMPTS
from app.storage.models import Event, utcnow
from fanout.worker import Worker
from tests.harness import Harness
from tests.worker_workload import run_cli, worker_env

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])


def metric(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


async def end_backoff() -> None:
    """A fake clock: the backoff of failed events is over."""
    await Event.get_pymongo_collection().update_many(
        {"state": "pending"}, {"$set": {"lease_until": utcnow() - timedelta(seconds=1)}}
    )


async def test_a_poison_event_is_parked_then_retried(h: Harness, tmp_path: Path) -> None:
    await h.user("ann")
    await h.user("bob")
    await h.befriend("ann", "bob")
    await h.drain()
    poison = await h.post("ann", "this one fails")
    later = await h.post("ann", "this one is fine")
    failing = True
    real = h.ctx.strategy.apply_posted

    async def flaky(author_id: ObjectId, status_id: ObjectId) -> None:
        if failing and status_id == ObjectId(poison["id"]):
            raise RuntimeError("injected failure")
        await real(author_id, status_id)

    h.ctx.strategy.apply_posted = flaky  # type: ignore[method-assign]
    failed_before = metric("timeline_events_failed_total", "status_posted")
    dead_before = metric("timeline_events_dead_total", "status_posted")
    worker = Worker(h.ctx, name="w")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await worker.process_one()
        ev = await h.ctx.store.events.find_one({"status_id": ObjectId(poison["id"])})
        assert ev is not None and ev["attempts"] == attempt
        assert "injected failure" in ev["last_error"]
        if attempt < MAX_ATTEMPTS:
            assert ev["state"] == "pending"
            # Backing off: neither it nor the author's later event is claimable yet.
            assert ev["lease_until"] > utcnow()
            assert not await worker.process_one()
            await end_backoff()
    assert ev["state"] == "dead"
    assert metric("timeline_events_failed_total", "status_posted") == failed_before + MAX_ATTEMPTS
    assert metric("timeline_events_dead_total", "status_posted") == dead_before + 1
    # Once the poison one is parked, the author's later events go on.
    await h.drain()
    assert [i["id"] for i in (await h.timeline("bob"))["items"]] == [later["id"]]
    health = (await h.client.get("/health")).json()
    assert health["dead_events"] == 1 and health["pending_events"] == 0

    env = worker_env(h.ctx.settings)
    listed = await asyncio.to_thread(run_cli, env, tmp_path, "events", "list", "--dead")
    assert listed.returncode == 0, listed.stderr
    assert str(ev["_id"]) in listed.stdout and "injected failure" in listed.stdout
    assert "1 dead event(s)" in listed.stdout
    unknown = await asyncio.to_thread(run_cli, env, tmp_path, "events", "retry", str(ObjectId()))
    assert unknown.returncode == 1 and "re-queued 0" in unknown.stdout
    retried = await asyncio.to_thread(run_cli, env, tmp_path, "events", "retry", str(ev["_id"]))
    assert retried.returncode == 0, retried.stderr
    assert "re-queued 1 dead event(s)" in retried.stdout

    failing = False  # the bug is fixed
    assert await h.drain() == 1
    assert [i["id"] for i in (await h.timeline("bob"))["items"]] == [later["id"], poison["id"]]
    health = (await h.client.get("/health")).json()
    assert health["dead_events"] == 0 and health["pending_events"] == 0


async def test_retry_all_and_bad_arguments(h: Harness, tmp_path: Path) -> None:
    ann = ObjectId((await h.user("ann"))["id"])
    await h.ctx.store.events.insert_many(
        [
            {"kind": "no_such_kind", "author_id": ann, "state": "dead", "attempts": 8}
            | {"created_at": utcnow(), "lease_until": None, "last_error": "UnknownEvent"}
            for _ in range(3)
        ]
    )
    env = worker_env(h.ctx.settings)
    bad = await asyncio.to_thread(run_cli, env, tmp_path, "events", "retry")
    assert bad.returncode == 2 and "--all" in bad.stderr
    done = await asyncio.to_thread(run_cli, env, tmp_path, "events", "retry", "--all")
    assert done.returncode == 0 and "re-queued 3" in done.stdout
    assert await h.ctx.store.events.count_documents({"state": "pending"}) == 3
