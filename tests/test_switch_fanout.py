"""A large fan-out retried during a strategy switch: each maintained strategy resumes from its own
progress, so the one that had not run yet skips no reader."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.maintenance import CONFIG_ID
from app.storage.models import utcnow
from app.strategies.materialized import timelines
from fanout.worker import Worker
from tests import harness
from tests.worker_workload import bulk_befriend, bulk_users

# Receivers per batch in this test (FANOUT_BATCH is 1,000): the same path, at 1/100 the size.
BATCH = 10
# The 1,100 friends at that scale: one full batch, then a partial one.
FRIENDS = BATCH + BATCH // 10
ORDERS = [("receiver_copies", "inbox_buckets"), ("inbox_buckets", "receiver_copies")]


class AfterFirstBatch(Exception):
    pass


@pytest.mark.parametrize(("active", "also"), ORDERS, ids=[f"{a}-then-{b}" for a, b in ORDERS])
async def test_a_retried_fanout_reaches_every_reader_of_both_strategies(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch, active: str, also: str
) -> None:
    monkeypatch.setattr(timelines, "FANOUT_BATCH", BATCH)
    async with harness.running(harness.test_settings(mongo_url, active)) as h:
        await h.ctx.store.service_config.update_one(
            {"_id": CONFIG_ID},
            {"$set": {"active_strategy": active, "built": [active, also]}},
            upsert=True,
        )
        await h.ctx.store.service_config.update_one(
            {"_id": CONFIG_ID}, {"$set": {"maintained": [active, also]}}
        )
        author = ObjectId((await h.user("ann"))["id"])
        friends = await bulk_users(FRIENDS, "f")
        await bulk_befriend(author, friends)
        status = ObjectId((await h.post("ann", "to many"))["id"])
        worker = Worker(h.ctx, name="w")
        worker.config_refresh_s = 0.0
        saves: list[dict[str, Any] | None] = []
        renew = Worker._renew

        async def fail_after_first_save(
            self: Worker, event: Any, lease: Any, resume_after: Any = None
        ) -> bool:
            ok = await renew(self, event, lease, resume_after)
            if resume_after is not None:
                saves.append(resume_after)
                if len(saves) == 1:
                    raise AfterFirstBatch  # the first strategy's first batch is saved
            return ok

        monkeypatch.setattr(Worker, "_renew", fail_after_first_save)
        assert await worker.process_one()
        assert len(saves) == 1
        strategies = await worker.strategies()
        assert [s.name for s in strategies] == [active, also]
        first = [r for r in [author, *friends] if status in await strategies[0].timeline_ids(r)]
        assert len(first) == BATCH  # the first strategy's first batch, then the failure
        stored = await h.ctx.store.events.find_one({"status_id": status})
        assert stored is not None and stored["state"] == "pending" and stored["attempts"] == 1
        # The retry's backoff, passed.
        past = utcnow() - timedelta(seconds=1)
        await h.ctx.store.events.update_one({"_id": stored["_id"]}, {"$set": {"lease_until": past}})
        await worker.drain()
        stored = await h.ctx.store.events.find_one({"status_id": status})
        assert stored is not None and stored["state"] == "done"
        for strategy in strategies:
            missing = [
                r for r in [author, *friends] if status not in await strategy.timeline_ids(r)
            ]
            assert missing == [], f"{strategy.name}: {len(missing)} readers lack the status"
