"""Expiry by the workers' housekeeping (fanout.housekeeping): a pass deletes exactly what is past
its keep time, in windows of bounded size, the worker pool runs it, no TTL index is left for the
embedded server's monitor to scan, and the migration moves an existing database over."""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.context import build_context
from app.limits.ratelimit import COLLECTION as RATE_LIMITS_COLLECTION
from app.limits.ratelimit import LEGACY_TTL_INDEX
from app.storage.models import DONE_EVENT_TTL_SECONDS, IDEMPOTENCY_TTL_SECONDS, utcnow
from entrypoints.migrate import MIGRATIONS_DIR
from fanout.housekeeping import Housekeeping, Pruned, prune
from fanout.pool import WorkerPool
from tests.harness import Harness

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])

DONE_KEEP = timedelta(seconds=DONE_EVENT_TTL_SECONDS)
KEY_KEEP = timedelta(seconds=IDEMPOTENCY_TTL_SECONDS)


def event(state: str, done_at: datetime | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "status_posted", "author_id": ObjectId(), "state": state}
    if done_at is not None:
        doc["done_at"] = done_at
    return doc


def key(created_at: datetime) -> dict[str, Any]:
    return {
        "user_id": ObjectId(),
        "key": str(ObjectId()),
        "body_hash": "h",
        "created_at": created_at,
    }


async def test_a_pass_deletes_exactly_what_is_past_its_keep_time(h: Harness) -> None:
    """A backlog (1,200 expired events, 40 s apart to 0.1 s apart: windows halved and doubled)
    goes in deletes of at most `batch`; what is not done, or not yet expired, stays."""
    now = utcnow()
    store = h.ctx.store
    expired = [
        now - DONE_KEEP - timedelta(seconds=1 + 0.1 * i + (40 * i if i < 20 else 0))
        for i in range(1200)
    ]
    await store.events.insert_many([event("done", t) for t in expired])
    kept_events = [
        event("done", now - DONE_KEEP + timedelta(seconds=5)),  # 5 s to go
        event("pending", None),
        event("dead", None),
        event("pending", now - 2 * DONE_KEEP),  # a done_at, but not done: never expired
    ]
    await store.events.insert_many(kept_events)
    await store.idempotency_keys.insert_many(
        [key(now - KEY_KEEP - timedelta(minutes=1 + i)) for i in range(30)]
    )
    await store.idempotency_keys.insert_many([key(now - KEY_KEEP + timedelta(minutes=1))])
    counters = store.db[RATE_LIMITS_COLLECTION]
    await counters.insert_many(
        [
            {"_id": f"r|k|{i}", "n": 1, "expires_at": now - timedelta(seconds=i + 1)}
            for i in range(7)
        ]
        + [{"_id": "r|k|now", "n": 1, "expires_at": now + timedelta(seconds=30)}]
    )

    deletes: list[int] = []
    delete_many = store.events.delete_many

    async def recorded(flt: dict[str, Any]) -> Any:
        result = await delete_many(flt)
        deletes.append(result.deleted_count)
        return result

    store.events.delete_many = recorded  # type: ignore[method-assign]
    try:
        assert await prune(store, now=now, batch=100, pause_s=0) == Pruned(1200, 30, 7)
    finally:
        del store.events.delete_many
    assert len(deletes) >= 12 and max(deletes) <= 100, deletes
    assert await store.events.count_documents({}) == len(kept_events)
    assert await store.idempotency_keys.count_documents({}) == 1
    assert [c["_id"] async for c in counters.find({})] == ["r|k|now"]
    assert await prune(store, now=now, batch=100, pause_s=0) == Pruned(0, 0, 0)
    # Past their own keep time, the kept ones go too; the events not done never do.
    later = now + KEY_KEEP
    assert await prune(store, now=later, batch=100, pause_s=0) == Pruned(1, 1, 1)
    assert await store.events.count_documents({"state": "done"}) == 0
    assert await store.events.count_documents({}) == 3


async def test_no_ttl_index_is_left_for_the_servers_monitor(h: Harness) -> None:
    """The embedded server's TTL monitor scans every document of each collection with a TTL
    index; expiry's range indexes are plain ones."""
    assert h.ctx.limiter.enabled
    for coll, ranged in [
        (h.ctx.store.events, [("done_at", 1), ("_id", 1)]),
        (h.ctx.store.idempotency_keys, [("created_at", 1), ("_id", 1)]),
        (h.ctx.store.db[RATE_LIMITS_COLLECTION], [("expires_at", 1), ("_id", 1)]),
    ]:
        indexes = (await coll.index_information()).values()
        assert [i for i in indexes if "expireAfterSeconds" in i] == []
        assert ranged in [i["key"] for i in indexes]


async def test_the_worker_pool_expires_beside_its_loops(h: Harness) -> None:
    store = h.ctx.store
    await store.events.insert_one(event("done", utcnow() - DONE_KEEP - timedelta(minutes=1)))
    await store.idempotency_keys.insert_one(key(utcnow() - KEY_KEEP - timedelta(minutes=1)))
    pool = WorkerPool(h.ctx, concurrency=1)
    task = asyncio.create_task(pool.run())
    try:
        for _ in range(100):
            if pool.housekeeping.passes:
                break
            await asyncio.sleep(0.05)
        assert pool.housekeeping.passes >= 1
    finally:
        pool.handle_exit()
        await asyncio.wait_for(task, 10)
    assert await store.events.count_documents({}) == 0
    assert await store.idempotency_keys.count_documents({}) == 0


async def test_the_loop_passes_until_told_to_stop(h: Harness) -> None:
    """Every interval (jittered) a pass, by the given clock; `handle_exit` ends the wait."""
    clock_now = [utcnow()]
    loop = Housekeeping(h.ctx.store, interval_s=0.02, clock=lambda: clock_now[0])
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)
    await h.ctx.store.idempotency_keys.insert_one(key(clock_now[0]))
    clock_now[0] += KEY_KEEP + timedelta(seconds=1)  # a day later, by the loop's clock
    for _ in range(100):
        if await h.ctx.store.idempotency_keys.count_documents({}) == 0:
            break
        await asyncio.sleep(0.02)
    loop.handle_exit()
    await asyncio.wait_for(task, 5)
    assert await h.ctx.store.idempotency_keys.count_documents({}) == 0
    assert loop.passes >= 3


def expiry_migration() -> Any:
    path = MIGRATIONS_DIR / "20261206160000_expiry_by_housekeeping.py"
    spec = importlib.util.spec_from_file_location("expiry_by_housekeeping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def index_shapes(h: Harness) -> dict[str, set[tuple[str, bool]]]:
    """Per collection: (key pattern, has a TTL) of the indexes expiry is about."""
    shapes: dict[str, set[tuple[str, bool]]] = {}
    for name in ["events", "idempotency_keys"]:
        info = await h.ctx.store.db[name].index_information()
        shapes[name] = {
            (str(i["key"]), "expireAfterSeconds" in i)
            for i in info.values()
            if i["key"][0][0] in ("done_at", "created_at")
        }
    return shapes


async def test_the_migration_replaces_the_ttl_indexes_and_back(h: Harness) -> None:
    migration = expiry_migration()
    ranged = {
        "events": {("[('done_at', 1), ('_id', 1)]", False)},
        "idempotency_keys": {("[('created_at', 1), ('_id', 1)]", False)},
    }
    ttl = {
        "events": {("[('done_at', 1)]", True)},
        "idempotency_keys": {("[('created_at', 1)]", True)},
    }
    assert await index_shapes(h) == ranged  # a fresh database: the models' indexes
    await migration.backward(h.ctx.store.db)  # what the previous version had
    assert await index_shapes(h) == ttl
    await migration.forward(h.ctx.store.db)
    assert await index_shapes(h) == ranged
    await migration.forward(h.ctx.store.db)  # nothing left to do
    assert await index_shapes(h) == ranged


async def test_the_limiter_drops_its_legacy_ttl_index_at_start_up(h: Harness) -> None:
    counters = h.ctx.store.db[RATE_LIMITS_COLLECTION]
    await counters.create_index("expires_at", expireAfterSeconds=0)  # an earlier version's
    assert LEGACY_TTL_INDEX in await counters.index_information()
    await build_context(h.ctx.settings, h.ctx.database)  # what every process does at start
    assert LEGACY_TTL_INDEX not in await counters.index_information()
