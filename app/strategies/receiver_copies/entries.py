"""receiver_copies' layout: one entry document per (owner, status) carrying what a page shows,
under the unique `(owner_id, status_id)` index, and one `meta` document per owner holding its
refill duties (`trimmed`, `owed`). hybrid keeps its fanned-out side in the same layout over its
own two collections.

Fan-out inserts entries with unordered `insert_many` (a duplicate key only says the copy is
there already); backfills and refills upsert them. Each owner's entries are trimmed to
TIMELINE_MAX now and then (TRIM_EVERY), so storage is bounded by TIMELINE_MAX + ~TRIM_EVERY
entries per owner while reads never show more than TIMELINE_MAX.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from app.metrics import FANOUT_BATCH_SIZE
from app.pipeline.checkpoint import fenced
from app.storage.chunks import chunked
from app.storage.db import Session
from app.storage.store import Collection
from app.strategies.materialized import FANOUT_BATCH, Item

# Trimming an owner costs one query over TIMELINE_MAX index keys, so it is done on about one
# insert in TRIM_EVERY (chosen by a hash, deterministic). Reads never show more than
# TIMELINE_MAX, so the bound on storage is TIMELINE_MAX + ~TRIM_EVERY entries per owner. 32, not
# 16 as before: the checks were the largest cost of a big fan-out above its inserts (580 ms of
# a 5,000-friend fan-out's 2.1 s on the benchmark's data, its inserts 1.3 s; docs/benchmarks.md,
# "Fan-out throughput"), and the price is at most ~3 % more entries than TIMELINE_MAX per owner.
TRIM_EVERY = 32
# Owners per trim check (`over`): one `$in` list each. The embedded server's `$in` costs grow
# with the square of the list (a check of 62 owners among 55,000 entries took 99 ms in one
# list, 49-74 ms in lists of 8 or 16); on mongod it is a few more round trips per fan-out batch.
TRIM_CHECK_OWNERS = 16
# Owners per `$in` look-up or update of their meta documents (app.storage.chunks).
OWNERS_PER_QUERY = FANOUT_BATCH
# Status ids per `$in` delete of an owner's entries (app.storage.chunks).
IDS_PER_DELETE = 100
DUPLICATE_KEY = 11000


def entry(owner_id: ObjectId, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "owner_id": owner_id,
        "status_id": status["_id"],
        "author_id": status["author_id"],
        "author": status["author"],
        "text": status["text"],
        "created_at": status["created_at"],
    }


def upsert(owner_id: ObjectId, status: dict[str, Any]) -> UpdateOne:
    return UpdateOne(
        {"owner_id": owner_id, "status_id": status["_id"]},
        {"$setOnInsert": entry(owner_id, status)},
        upsert=True,
    )


def should_trim(owner_id: ObjectId, status_id: ObjectId) -> bool:
    return zlib.crc32(owner_id.binary + status_id.binary) % TRIM_EVERY == 0


class Entries:
    """The entries and meta documents of one owner-per-document layout (a Layout)."""

    def __init__(self, entries: Collection, meta: Collection, max_items: int) -> None:
        self.entries = entries
        self.meta = meta
        self.max_items = max_items

    # -- the author's own copy, in the API's transaction ---------------------------------------
    async def own_post(self, status: dict[str, Any], *, session: Session) -> None:
        await self.entries.insert_one(entry(status["author_id"], status), session=session)

    async def own_delete(self, status: dict[str, Any], *, session: Session) -> None:
        await self.entries.delete_one(
            {"owner_id": status["author_id"], "status_id": status["_id"]}, session=session
        )

    # -- bulk writes ---------------------------------------------------------------------------
    async def bulk_upsert(self, ops: Iterable[UpdateOne]) -> int:
        """Unordered bulk upserts in FANOUT_BATCH-sized batches; returns entries inserted."""
        inserted = 0
        for batch in chunked(list(ops), FANOUT_BATCH):
            FANOUT_BATCH_SIZE.observe(len(batch))
            async with fenced():
                result = await self.entries.bulk_write(batch, ordered=False)
            inserted += result.upserted_count
        return inserted

    async def insert_new(self, entries: list[dict[str, Any]]) -> int:
        """Insert fresh copies with one unordered `insert_many`; returns how many were new.

        Equivalent to `$setOnInsert` upserts on the unique (owner_id, status_id) key, because a
        copy never changes once written: a duplicate-key error only says the copy is already
        there (a resumed or repeated fan-out), and unordered inserts carry on past it. Plain
        inserts cost about a third of upserts on the embedded server (benchmarks/fanout.py)."""
        if not entries:
            return 0
        FANOUT_BATCH_SIZE.observe(len(entries))
        try:
            async with fenced():
                result = await self.entries.insert_many(entries, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    async def over(self, owners: list[ObjectId]) -> list[ObjectId]:
        """Those of `owners` holding more than TIMELINE_MAX entries: one counting query per
        TRIM_CHECK_OWNERS owners instead of one query per owner."""
        found: list[ObjectId] = []
        for chunk in chunked(owners, TRIM_CHECK_OWNERS):
            cursor = await self.entries.aggregate(
                [
                    {"$match": {"owner_id": {"$in": chunk}}},
                    {"$group": {"_id": "$owner_id", "n": {"$sum": 1}}},
                    {"$match": {"n": {"$gt": self.max_items}}},
                ]
            )
            found += [d["_id"] async for d in cursor]
        return found

    # -- Layout --------------------------------------------------------------------------------
    async def deliver(
        self, owners: list[ObjectId], status: dict[str, Any]
    ) -> tuple[int, list[ObjectId]]:
        inserted = await self.insert_new([entry(o, status) for o in owners])
        return inserted, await self.over([o for o in owners if should_trim(o, status["_id"])])

    async def place(self, owner: ObjectId, statuses: list[dict[str, Any]]) -> int:
        return await self.bulk_upsert(upsert(owner, s) for s in statuses)

    async def items(self, owner: ObjectId, floor: ObjectId | None = None) -> list[Item]:
        flt: dict[str, Any] = {"owner_id": owner}
        if floor is not None:
            flt["status_id"] = {"$gte": floor}
        cursor = self.entries.find(flt, {"status_id": 1, "author_id": 1}).sort("status_id", -1)
        return [(d["status_id"], d["author_id"]) async for d in cursor]

    async def remove(self, owner: ObjectId, doomed: Callable[[ObjectId, ObjectId], bool]) -> int:
        ids = [s for s, a in await self.items(owner) if doomed(s, a)]
        removed = 0
        for chunk in chunked(ids, IDS_PER_DELETE):
            async with fenced():
                result = await self.entries.delete_many(
                    {"owner_id": owner, "status_id": {"$in": chunk}}
                )
            removed += result.deleted_count
        return removed

    async def remove_author(self, owner: ObjectId, author_id: ObjectId) -> int:
        async with fenced():
            result = await self.entries.delete_many({"owner_id": owner, "author_id": author_id})
        return result.deleted_count

    async def holders(self, status_id: ObjectId) -> set[ObjectId]:
        # By status id (its own index), not by the owners: a big author's copies are on every
        # shard anyway, and an `$in` of thousands of owners costs time growing with the square
        # of the list on the embedded server (docs/scaling.md, "allowed broadcasts").
        cursor = self.entries.find({"status_id": status_id}, {"owner_id": 1})
        return {d["owner_id"] async for d in cursor}

    async def remove_status(self, status_id: ObjectId, holders: list[ObjectId]) -> None:
        async with fenced():
            await self.entries.delete_many({"status_id": status_id})

    async def _beyond(self, owner: ObjectId) -> ObjectId | None:
        """The newest status id beyond the owner's TIMELINE_MAX newest entries, if any."""
        cursor = (
            self.entries.find({"owner_id": owner}, {"status_id": 1})
            .sort("status_id", -1)
            .skip(self.max_items)
            .limit(1)
        )
        beyond = await cursor.to_list()
        return beyond[0]["status_id"] if beyond else None

    async def trim(self, owner: ObjectId) -> int | None:
        if await self._beyond(owner) is None:
            return None
        await self.mark_trimmed(owner)
        cut = await self._beyond(owner)
        if cut is None:
            return None
        async with fenced():
            await self.entries.delete_many({"owner_id": owner, "status_id": {"$lte": cut}})
        return await self.entries.count_documents({"owner_id": owner}, limit=self.max_items)

    async def mark_trimmed(self, owner: ObjectId) -> None:
        async with fenced():
            await self.meta.update_one(
                {"owner_id": owner}, {"$set": {"trimmed": True}}, upsert=True
            )

    async def mark_all_trimmed(self, owners: list[ObjectId]) -> None:
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            ops = [
                UpdateOne({"owner_id": o}, {"$set": {"trimmed": True}}, upsert=True) for o in chunk
            ]
            async with fenced():
                await self.meta.bulk_write(ops, ordered=False)

    async def is_trimmed(self, owner: ObjectId) -> bool:
        return (
            await self.meta.find_one({"owner_id": owner, "trimmed": True}, {"_id": 1}) is not None
        )

    async def mark_owed(self, owners: list[ObjectId], status_id: ObjectId) -> None:
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            async with fenced():
                await self.meta.update_many(
                    {"owner_id": {"$in": chunk}, "trimmed": True},
                    {"$addToSet": {"owed": status_id}},
                )

    async def owed(self, owners: list[ObjectId], status_id: ObjectId) -> list[ObjectId]:
        found: list[ObjectId] = []
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            cursor = self.meta.find(
                {"owner_id": {"$in": chunk}, "owed": status_id}, {"owner_id": 1}
            )
            found += [d["owner_id"] async for d in cursor]
        return found

    async def paid(self, owner: ObjectId, status_id: ObjectId) -> None:
        async with fenced():
            await self.meta.update_one({"owner_id": owner}, {"$pull": {"owed": status_id}})
