"""inbox_buckets' layout for the materialized-timeline machinery: each reader's timeline is a
chain of buckets (buckets.py) plus loose entries not folded into it yet (loose.py), and the
refill duties (`trimmed`, `owed`) live on the head.

A fan-out batch is one unordered bulk insert of loose entries, one per receiver (a retry's
duplicates are skipped); the fold (fold.py) moves them into the chains later, off the post's
path. Nothing a delivery writes grows a chain, so no receiver needs a trim after it. Backfills
and refills (`place`) write the chain directly, as before. `items` is what a page shows: chain
and live loose entries, without tombstoned statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId

from app.metrics import FANOUT_BATCH_SIZE
from app.pipeline.checkpoint import fenced
from app.storage.chunks import chunked
from app.strategies.inbox_buckets.buckets import Inbox
from app.strategies.inbox_buckets.chain import MAX_ID, Chain, Entry, entry
from app.strategies.inbox_buckets.loose import merge
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
        FANOUT_BATCH_SIZE.observe(len(owners))
        return await self.inbox.loose.insert(owners, entry(status)), []

    async def place(self, owner: ObjectId, statuses: list[dict[str, Any]]) -> int:
        # What the owner holds loose is in their timeline already: the fold moves it.
        held = {d["s"] for d in await self.inbox.loose.all(owner) if "gone" not in d}
        return await self.inbox.place(owner, [entry(s) for s in statuses if s["_id"] not in held])

    async def items(self, owner: ObjectId, floor: ObjectId | None = None) -> list[Item]:
        chain = await self.inbox.chain(owner)
        shown = merge(chain.ids_items(), chain.loose)
        found = [(i["s"], i["a"]) for i in shown]
        return found if floor is None else [(s, a) for s, a in found if s >= floor]

    async def remove(self, owner: ObjectId, doomed: Callable[[ObjectId, ObjectId], bool]) -> int:
        def select(chain: Chain) -> set[ObjectId]:
            return {i["s"] for b in chain.buckets for i in b["items"] if doomed(i["s"], i["a"])}

        def loose(item: Entry) -> bool:
            return doomed(item["s"], item["a"])

        return await self.inbox.remove(owner, select, loose)

    async def remove_author(self, owner: ObjectId, author_id: ObjectId) -> int:
        return await self.inbox.remove(
            owner, lambda chain: chain.by_author(author_id), {"items.a": author_id}
        )

    async def holders(self, status_id: ObjectId) -> set[ObjectId]:
        # By status id alone (a broadcast on a cluster): the holders are on every shard anyway,
        # as for receiver_copies' removal by status (docs/scaling.md). Loose entries (and
        # tombstones, whose removal a retry then finishes) count: they are in the same index.
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
