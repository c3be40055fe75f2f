"""The fold of inbox_buckets: moving an owner's loose entries (loose.py) into their chain.

Steps, each idempotent, any of them may be cut short by a crash (buckets.py, "Loose entries"):
1. claim: the owner's live loose documents get this fold's token (`folding`, a new ObjectId),
   unless tombstoned (`gone`); the fold reads back which carry its token;
2. place: those entries go into the chain by `Inbox.place` (splits, the cap, the trimmed mark,
   all as for any placement), and the timeline is trimmed (with the refill a trim owes);
3. delete each claimed document still carrying the token and no tombstone. One tombstoned
   meanwhile (a removal came in between) has its entry pulled from the chain by the fold
   itself (the removal may have looked at the chain before step 2 put it back), then its
   tombstone is deleted. One another fold claimed since is that fold's.

Tombstones left behind (a fold or a removal that crashed) are cleaned by a later fold once
older than FOLD_CLAIM_S: their entry is pulled from the chain, then they go. Until then reads
hide the status they name, so the removal rule holds whatever the state of folds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from app.pipeline.checkpoint import fenced
from app.strategies.inbox_buckets.buckets import Inbox
from app.strategies.inbox_buckets.chain import HEAD_S, MAX_ID, loose_range

# Loose documents one fold takes of one owner: bounded writes ($in lists, one placement of at
# most this many entries). An owner with more is folded again by the next pass or read.
FOLD_BATCH = 500
# How old a claim or a tombstone must be before another fold may clean it up (pull its entry
# from the chain and delete it). A fold takes milliseconds; a claim this old is a crashed fold's.
# A live fold whose claim is older than half of this does not place (it stalled: its claims may
# be taken over), so a placement never lands after another fold cleaned its tombstones, short
# of a stall of FOLD_CLAIM_S / 2 inside the placement itself.
FOLD_CLAIM_S = 60.0

Refill = Callable[[ObjectId], Awaitable[Any]]


def _age_s(token: ObjectId, now: ObjectId) -> float:
    return (now.generation_time - token.generation_time).total_seconds()


class Folder:
    """Folds one inbox collection's loose entries. `trim(owner)` cuts a timeline to
    TIMELINE_MAX (refilling it when a concurrent removal overlapped the cut), `refill(owner)`
    rebuilds it from the truth."""

    def __init__(self, inbox: Inbox, trim: Refill, refill: Refill) -> None:
        self.inbox = inbox
        self.coll = inbox.coll
        self.trim = trim
        self.refill = refill

    async def fold(self, owner: ObjectId, docs: list[dict[str, Any]] | None = None) -> int:
        """Fold up to FOLD_BATCH of the owner's loose documents (`docs`, when the caller has just
        read them) into the chain; returns how many loose documents went."""
        if docs is None:
            docs = await self.inbox.loose.below(owner, HEAD_S, limit=FOLD_BATCH)
        docs = docs[:FOLD_BATCH]
        now = ObjectId()
        cleanup = [
            d
            for d in docs
            if "gone" in d and _age_s(d.get("folding") or d["gone"], now) > FOLD_CLAIM_S
        ]
        folded = 0
        live = [d["s"] for d in docs if "gone" not in d]
        if live:
            done, removed_meanwhile = await self._fold_live(owner, live)
            folded += done
            cleanup += removed_meanwhile
        pulled = 0
        for doc in cleanup:
            pulled += await self.inbox.unchain(owner, doc["s"])
            claim = doc.get("folding")
            same = {"folding": claim} if claim is not None else {"folding": {"$exists": False}}
            async with fenced():
                result = await self.coll.delete_one(
                    {**loose_range(owner), "_id": doc["_id"], "gone": doc["gone"], **same}
                )
            folded += result.deleted_count
        if pulled and await self._trimmed(owner):
            # The pulled entry may have pushed a true one out at a trim in between.
            await self.refill(owner)
        return folded

    async def _fold_live(
        self, owner: ObjectId, live: list[ObjectId]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Steps 1-3 for the live loose documents of statuses `live`: how many went, and the
        claimed ones tombstoned meanwhile (whose entry the caller pulls from the chain)."""
        token = ObjectId()
        mine = {**loose_range(owner), "s": {"$in": live}}
        async with fenced():
            await self.coll.update_many(
                {**mine, "gone": {"$exists": False}}, {"$set": {"folding": token}}
            )
        claimed = await self.coll.find({**mine, "folding": token}).to_list()
        if not claimed or _age_s(token, ObjectId()) > FOLD_CLAIM_S / 2:
            return 0, []
        entries = [d["items"][0] for d in claimed if d["items"]]  # a fold request has none
        if entries and await self.inbox.place(owner, entries) and await self._over_cap(owner):
            await self.trim(owner)
        ids = [d["s"] for d in claimed]
        async with fenced():
            result = await self.coll.delete_many(
                {**mine, "s": {"$in": ids}, "folding": token, "gone": {"$exists": False}}
            )
        if result.deleted_count == len(claimed):
            return result.deleted_count, []
        left = await self.coll.find(
            {**mine, "s": {"$in": ids}, "folding": token, "gone": {"$exists": True}}
        ).to_list()
        return result.deleted_count, left

    async def _over_cap(self, owner: ObjectId) -> bool:
        """Whether the chain may hold more than TIMELINE_MAX: its head's `count` (which only
        over-states) says so; a trim's read of the whole chain is saved otherwise."""
        head = await self.inbox.bucket(owner, MAX_ID, {"count": 1})
        return head is None or int(head.get("count", 0)) > self.inbox.cap

    async def _trimmed(self, owner: ObjectId) -> bool:
        head = await self.inbox.bucket(owner, MAX_ID, {"trimmed": 1})
        return head is not None and bool(head.get("trimmed"))
