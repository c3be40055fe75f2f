"""hybrid's bookkeeping of large-audience authors: each one's state (`large_authors`) and, per
reader, which friends a page merges in at read time (`large_friends`). Only the worker writes
them, and only in events of the author concerned (held under that author's lease), so one
author's pairs never see two writers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bson import ObjectId
from pymongo import UpdateOne

from app.pipeline.checkpoint import fenced
from app.storage.chunks import chunked
from app.storage.models import utcnow
from app.storage.store import Collection

State = Literal["ascending", "large", "descending"]

# Owners per `$in` or bulk write of pairs: the embedded server's `$in` costs time growing with
# the square of the list (app.storage.chunks), and a crossing writes
# one pair per friend of the author (up to MAX_FRIENDS), so it is cut into lists of this size.
PAIRS_PER_WRITE = 100


class LargeAudience:
    """The `large_authors` and `large_friends` collections."""

    def __init__(self, authors: Collection, pairs: Collection) -> None:
        self.authors = authors
        self.pairs = pairs

    async def state(self, author_id: ObjectId) -> State | None:
        """The author's state; None for an ordinary (fanned-out) author."""
        doc = await self.authors.find_one({"_id": author_id}, {"state": 1})
        return None if doc is None else doc["state"]

    async def set_state(self, author_id: ObjectId, state: State | None) -> None:
        async with fenced():
            if state is None:
                await self.authors.delete_one({"_id": author_id})
            else:
                await self.authors.update_one(
                    {"_id": author_id},
                    {"$set": {"state": state, "updated_at": utcnow()}},
                    upsert=True,
                )

    async def of_reader(self, owner_id: ObjectId) -> list[tuple[ObjectId, bool]]:
        """The owner's large-audience friends, each with whether the owner's copies of their
        statuses are kept (only while the author is descending). One indexed query."""
        cursor = self.pairs.find({"owner_id": owner_id}, {"author_id": 1, "materialized": 1})
        return [(d["author_id"], bool(d.get("materialized"))) async for d in cursor]

    async def link(self, owner_id: ObjectId, author_id: ObjectId) -> None:
        async with fenced():
            await self.pairs.update_one(
                {"owner_id": owner_id, "author_id": author_id},
                {"$set": {"materialized": False}},
                upsert=True,
            )

    async def unlink(self, owner_id: ObjectId, author_id: ObjectId) -> None:
        async with fenced():
            await self.pairs.delete_one({"owner_id": owner_id, "author_id": author_id})

    async def link_all(self, author_id: ObjectId, owners: Sequence[ObjectId]) -> int:
        """Pair `author_id` with exactly `owners` (merged, not materialized): upserts for
        them, then removal of pairs with anyone else (ex-friends). Idempotent."""
        changed = 0
        for chunk in chunked(owners, PAIRS_PER_WRITE):
            ops = [
                UpdateOne(
                    {"owner_id": o, "author_id": author_id},
                    {"$set": {"materialized": False}},
                    upsert=True,
                )
                for o in chunk
            ]
            async with fenced():
                result = await self.pairs.bulk_write(ops, ordered=False)
            changed += result.upserted_count + result.modified_count
        keep = set(owners)
        cursor = self.pairs.find({"author_id": author_id}, {"owner_id": 1})
        stale = [d["owner_id"] async for d in cursor if d["owner_id"] not in keep]
        for chunk in chunked(stale, PAIRS_PER_WRITE):
            async with fenced():
                gone = await self.pairs.delete_many(
                    {"author_id": author_id, "owner_id": {"$in": chunk}}
                )
            changed += gone.deleted_count
        return changed

    async def materialize_all(self, author_id: ObjectId) -> None:
        """Mark every pair of the author as materialized: rebuilds of those owners keep (and
        refill) the author's copies from now on, while pages still merge the author in."""
        async with fenced():
            await self.pairs.update_many({"author_id": author_id}, {"$set": {"materialized": True}})

    async def unlink_all(self, author_id: ObjectId) -> int:
        async with fenced():
            result = await self.pairs.delete_many({"author_id": author_id})
        return result.deleted_count
