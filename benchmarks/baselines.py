"""Baselines measured in the same run as the strategies.

- `naive_on_read`: the seed question's own idea. Load the reader's friends, then one `find` per
  author (the reader and each friend) for their newest `limit` statuses, merged in Python.
- `floor`: what no design can beat. A read is one indexed `find` returning `limit` ready-made
  documents and nothing else; a fan-out is one raw `insert_many` of N ready-made entries into a
  collection with the same indexes as `timeline_entries`.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from app.storage.models import TimelineEntry
from app.strategies.receiver_copies.entries import entry
from benchmarks.config import PAGE_LIMIT
from benchmarks.explain import Explained, explain_find
from benchmarks.monitor import CommandCounter, Window
from benchmarks.results import ReadSummary
from benchmarks.stats import Stopwatch, ms, percentile
from benchmarks.workload import status_text

STATUS_FIELDS = {"_id": 1, "author": 1, "text": 1, "created_at": 1}
# The floor's read collection: this many owners, each with exactly one page of documents.
FLOOR_OWNERS = 50
# Floor reads timed; each is one short indexed find, so more samples cost little.
FLOOR_READS = 200
# insert_many repetitions of the floor's fan-out (the median rate is reported).
FLOOR_INSERT_REPEATS = 3

Tick = Callable[[int], None]


async def raw_insert_many(
    db: AsyncDatabase[Any], owners: list[ObjectId], status: dict[str, Any]
) -> float:
    """The floor of one fan-out: seconds for one unordered insert_many of a ready-made entry of
    `status` per owner into a fresh scratch collection with the indexes of `timeline_entries`
    (dropped after). The owners are the real receivers, so the entries land where a fan-out's
    do in the indexes, not at their right edge as fresh ids would."""
    scratch = db[f"scratch_{uuid.uuid4().hex[:8]}"]
    await scratch.create_indexes(list(TimelineEntry.Settings.indexes))
    fresh = {**status, "_id": ObjectId()}
    docs = [entry(o, fresh) for o in owners]
    start = time.perf_counter()
    await scratch.insert_many(docs, ordered=False)
    elapsed = time.perf_counter() - start
    await scratch.drop()
    return elapsed


class NaiveOnRead:
    """Runs against any strategy's database: it needs only `friendships` and `statuses`."""

    def __init__(self, db: AsyncDatabase[Any], counter: CommandCounter) -> None:
        self.db = db
        self.counter = counter

    async def authors(self, user_id: ObjectId) -> list[ObjectId]:
        cursor = self.db["friendships"].find({"user_id": user_id}, {"friend_id": 1, "_id": 0})
        return [user_id, *[d["friend_id"] async for d in cursor]]

    async def page(self, user_id: ObjectId, limit: int = PAGE_LIMIT) -> list[dict[str, Any]]:
        statuses = self.db["statuses"]
        per_author = [
            await statuses.find({"author_id": a}, STATUS_FIELDS).sort("_id", -1).to_list(limit)
            for a in await self.authors(user_id)
        ]
        merged = heapq.merge(*per_author, key=lambda d: d["_id"], reverse=True)
        return list(itertools.islice(merged, limit))

    async def timed_page(self, user_id: ObjectId) -> tuple[float, Window]:
        with self.counter.window() as w, Stopwatch() as sw:
            await self.page(user_id)
        return sw.seconds, w

    async def explain(self, user_id: ObjectId) -> Explained:
        """The keys and documents all of a page's per-author queries examine, summed."""
        keys = docs = 0
        plans: set[str] = set()
        blocking = False
        for a in await self.authors(user_id):
            ex = await explain_find(
                self.db,
                "statuses",
                {"author_id": a},
                sort={"_id": -1},
                limit=PAGE_LIMIT,
                projection=STATUS_FIELDS,
            )
            keys, docs = keys + ex.keys_examined, docs + ex.docs_examined
            plans.add(ex.plan)
            blocking = blocking or ex.blocking_sort
        plan = "n×(" + "|".join(sorted(plans)) + ")>MERGE_IN_PYTHON"
        return Explained(plan, blocking, keys, docs, PAGE_LIMIT)

    async def measure(self, user_ids: list[ObjectId], explain_sample: int) -> ReadSummary:
        read_s, trips, explained = [], [], []
        for uid in user_ids:
            seconds, w = await self.timed_page(uid)
            read_s.append(seconds)
            trips.append(w.round_trips)
        for uid in list(dict.fromkeys(user_ids))[:explain_sample]:
            explained.append(await self.explain(uid))
        return ReadSummary.of(read_s, trips, explained)


async def measure_floor(
    db: AsyncDatabase[Any], counter: CommandCounter, insert_entries: int, tick: Tick
) -> dict[str, Any]:
    """The floor for reads (one indexed find of a ready page) and writes (raw insert_many)."""
    pages = db["floor_pages"]
    await pages.create_index([("owner_id", ASCENDING)])
    owners = [ObjectId() for _ in range(FLOOR_OWNERS)]
    await pages.insert_many(
        [
            {"owner_id": o, "status_id": ObjectId(), "author": "floor", "text": status_text(i)}
            for o in owners
            for i in range(PAGE_LIMIT)
        ]
    )
    read_s, trips = [], []
    for i in range(FLOOR_READS):
        owner = owners[i % FLOOR_OWNERS]
        with counter.window() as w, Stopwatch() as sw:
            await pages.find({"owner_id": owner}).to_list()
        read_s.append(sw.seconds)
        trips.append(w.round_trips)
        tick(1)
    ex = await explain_find(db, "floor_pages", {"owner_id": owners[0]})
    read = ReadSummary.of(read_s, trips, [ex])

    entries = db["floor_entries"]
    await entries.create_indexes(list(TimelineEntry.Settings.indexes))
    rates = []
    for _ in range(FLOOR_INSERT_REPEATS):
        status_id, author = ObjectId(), ObjectId()
        docs = [
            {
                "owner_id": ObjectId(),
                "status_id": status_id,
                "author_id": author,
                "author": "floor",
                "text": status_text(0),
                "created_at": status_id.generation_time,
            }
            for _ in range(insert_entries)
        ]
        with Stopwatch() as sw:
            await entries.insert_many(docs, ordered=False)
        rates.append(insert_entries / sw.seconds)
        tick(1)
    rate = sorted(rates)[len(rates) // 2]
    return {
        "read_p50_ms": ms(percentile(read_s, 50)),
        "insert_many_entries_per_s": round(rate, 1),
        "insert_many_entries": insert_entries,
        "read": read.as_json(),
    }
