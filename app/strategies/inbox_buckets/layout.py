"""inbox_buckets' layout for the materialized-timeline machinery: each reader's timeline is a
chain of buckets (buckets.py), and the refill duties (`trimmed`, `owed`) live on the head.

A fan-out batch is one unordered bulk write of conditional head appends (`Inbox.append_op`);
the receivers whose head did not take it (full, missing, at TIMELINE_MAX, or already holding
the status) take the general placement, and are trimmed by the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId

from app.metrics import FANOUT_BATCH_SIZE
from app.pipeline.checkpoint import fenced
from app.storage.chunks import chunked
from app.strategies.inbox_buckets.buckets import Inbox
from app.strategies.inbox_buckets.chain import MAX_ID, Chain, entry
from app.strategies.materialized import Item

# Owners per `$in` look-up (which receivers hold a status, which heads are trimmed or owed):
# bounded `$in` lists (app.storage.chunks).
OWNERS_PER_QUERY = 100


class Buckets:
    """The bucket chains of one inbox collection (a Layout)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.coll = inbox.coll

    async def deliver(
        self, owners: list[ObjectId], status: dict[str, Any]
    ) -> tuple[int, list[ObjectId]]:
        item = entry(status)
        FANOUT_BATCH_SIZE.observe(len(owners))
        ops = [self.inbox.append_op(o, item) for o in owners]
        async with fenced():
            result = await self.coll.bulk_write(ops, ordered=False)
        if result.matched_count == len(owners):
            return len(owners), []
        # Some heads were full, missing, at TIMELINE_MAX or already held the status: those
        # that do not hold it take the general path.
        holding = await self._holding(owners, item["s"])
        placed = [o for o in owners if o not in holding]
        for owner in placed:
            await self.inbox.place(owner, [item])
        return len(owners), placed

    async def _holding(self, owners: list[ObjectId], status_id: ObjectId) -> set[ObjectId]:
        """Those of `owners` whose head holds `status_id`. Only a head is surely on the chain:
        an interrupted split's lower part holds entries the chain may not (a crash before the
        cut), and counting it skipped the placement for good. One lower on the chain only
        costs `place` a read that finds it there."""
        held: set[ObjectId] = set()
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            cursor = self.coll.find(
                {"items.s": status_id, "owner_id": {"$in": chunk}}, {"owner_id": 1, "hi": 1}
            )
            held.update([d["owner_id"] async for d in cursor if d["hi"] == MAX_ID])
        return held

    async def place(self, owner: ObjectId, statuses: list[dict[str, Any]]) -> int:
        return await self.inbox.place(owner, [entry(s) for s in statuses])

    async def items(self, owner: ObjectId, floor: ObjectId | None = None) -> list[Item]:
        chain = await self.inbox.chain(owner)
        found = [(i["s"], i["a"]) for b in chain.buckets for i in b["items"]]
        return found if floor is None else [(s, a) for s, a in found if s >= floor]

    async def remove(self, owner: ObjectId, doomed: Callable[[ObjectId, ObjectId], bool]) -> int:
        def select(chain: Chain) -> set[ObjectId]:
            return {i["s"] for b in chain.buckets for i in b["items"] if doomed(i["s"], i["a"])}

        return await self.inbox.remove(owner, select)

    async def remove_author(self, owner: ObjectId, author_id: ObjectId) -> int:
        return await self.inbox.remove(owner, lambda chain: chain.by_author(author_id))

    async def holders(self, status_id: ObjectId) -> set[ObjectId]:
        # By status id alone (a broadcast on a cluster): the holders are on every shard anyway,
        # as for receiver_copies' removal by status (docs/scaling.md).
        cursor = self.coll.find({"items.s": status_id}, {"owner_id": 1})
        return {d["owner_id"] async for d in cursor}

    async def remove_status(self, status_id: ObjectId, holders: list[ObjectId]) -> None:
        for owner in holders:
            await self.inbox.remove_status(owner, status_id)

    async def trim(self, owner: ObjectId) -> int | None:
        removed, left = await self.inbox.trimmed(owner)
        return left if removed else None

    async def mark_trimmed(self, owner: ObjectId) -> None:
        await self.inbox.mark_trimmed(owner)

    async def is_trimmed(self, owner: ObjectId) -> bool:
        head = await self.inbox.bucket(owner, MAX_ID, {"trimmed": 1})
        return head is not None and bool(head.get("trimmed"))

    async def mark_owed(self, owners: list[ObjectId], status_id: ObjectId) -> None:
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            async with fenced():
                await self.coll.update_many(
                    {"_id": {"$in": chunk}, "owner_id": {"$in": chunk}, "trimmed": True},
                    {"$addToSet": {"owed": status_id}},
                )

    async def owed(self, owners: list[ObjectId], status_id: ObjectId) -> list[ObjectId]:
        found: list[ObjectId] = []
        for chunk in chunked(owners, OWNERS_PER_QUERY):
            cursor = self.coll.find(
                {"_id": {"$in": chunk}, "owner_id": {"$in": chunk}, "owed": status_id},
                {"owner_id": 1},
            )
            found += [d["owner_id"] async for d in cursor]
        return found

    async def paid(self, owner: ObjectId, status_id: ObjectId) -> None:
        async with fenced():
            await self.coll.update_one(
                {"_id": owner, "owner_id": owner, "hi": MAX_ID}, {"$pull": {"owed": status_id}}
            )
