"""receiver_copies' entries: what a copy holds, and the two fenced bulk writes of copies
(app.strategies.receiver_copies has the cost model)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from app.checkpoint import fenced
from app.metrics import FANOUT_BATCH_SIZE
from app.store import Collection

# Entries per unordered bulk write. 1,000 keeps each command well under the 16 MB message limit
# (an entry is ~250 B plus text of up to 5,000 chars) and lets a resumed fan-out redo at most one
# batch, while amortizing the round trip (drivers split bigger batches anyway).
FANOUT_BATCH = 1000
# Trimming an owner costs one query over TIMELINE_MAX index keys, so it is done on about one
# insert in TRIM_EVERY (chosen by a hash, deterministic). Reads never show more than
# TIMELINE_MAX, so the bound on storage is TIMELINE_MAX + ~TRIM_EVERY entries per owner.
TRIM_EVERY = 16
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


async def bulk_upsert(coll: Collection, ops: Iterable[UpdateOne]) -> int:
    """Unordered bulk upserts in FANOUT_BATCH-sized batches; returns entries inserted."""
    inserted = 0
    batch: list[UpdateOne] = []
    for op in ops:
        batch.append(op)
        if len(batch) >= FANOUT_BATCH:
            FANOUT_BATCH_SIZE.observe(len(batch))
            async with fenced():
                result = await coll.bulk_write(batch, ordered=False)
            inserted += result.upserted_count
            batch = []
    if batch:
        FANOUT_BATCH_SIZE.observe(len(batch))
        async with fenced():
            inserted += (await coll.bulk_write(batch, ordered=False)).upserted_count
    return inserted


async def insert_new(coll: Collection, entries: list[dict[str, Any]]) -> int:
    """Insert fresh copies with one unordered `insert_many`; returns how many were new.

    Equivalent to `$setOnInsert` upserts on the unique (owner_id, status_id) key, because a
    copy never changes once written: a duplicate-key error only says the copy is already
    there (a resumed or repeated fan-out), and unordered inserts carry on past it. Plain
    inserts cost about a third of upserts on the embedded server (benchmarks/fanout.py)."""
    FANOUT_BATCH_SIZE.observe(len(entries))
    try:
        async with fenced():
            result = await coll.insert_many(entries, ordered=False)
        return len(result.inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(exc.details.get("nInserted", 0))
