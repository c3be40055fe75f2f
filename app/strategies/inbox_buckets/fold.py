"""The fold of inbox_buckets: moving an owner's loose entries (loose.py) into their chain.

Steps, each idempotent, any of them may be cut short by a crash (buckets.py, "Loose entries"):
1. claim: the owner's live loose documents get this fold's token (`folding`, a new ObjectId),
   unless tombstoned (`gone`); the fold reads back which carry its token;
2. place: those entries go into the chain: into the heads that have room for them by one
   pipeline update per batch of owners (heads.py: each distinct entry sent once, each head
   changed atomically under the push's conditions), the rest by `Inbox.place` (splits, the cap,
   the trimmed mark, all as for any placement); then a timeline over TIMELINE_MAX is trimmed
   (with the refill a trim owes);
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
from app.storage.chunks import chunked
from app.strategies.contract import Contention
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

# Loose document ids per claim: bounded `$in` lists (app.storage.chunks; the embedded server's
# `$in` costs grow with the square of the list: a claim of 3,000 ids outlasted the 15 s timeout).
CLAIM_IDS = 100
# Owners one fold pass folds together (their claims, read-backs and deletes are one command
# each): bounded `$in` lists.
FOLD_OWNERS = 100

Refill = Callable[[ObjectId], Awaitable[Any]]


def _by_owner(docs: list[dict[str, Any]]) -> dict[ObjectId, list[dict[str, Any]]]:
    grouped: dict[ObjectId, list[dict[str, Any]]] = {}
    for doc in docs:
        grouped.setdefault(doc["owner_id"], []).append(doc)
    return grouped


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

    async def fold(self, owner: ObjectId) -> int:
        """Fold up to FOLD_BATCH of the owner's loose documents into the chain; returns how many
        loose documents went."""
        return await self.fold_many([owner])

    async def fold_many(self, owners: list[ObjectId]) -> int:
        """Fold up to FOLD_BATCH loose documents of each of `owners` (at most FOLD_OWNERS), the
        claim, the read-back and the deletes of all of them in one command each; returns how
        many loose documents went. An owner whose placement kept meeting concurrent changes
        keeps its claims (the next fold re-claims them); the first such Contention is raised
        once every other owner is done."""
        scope = {"owner_id": {"$in": owners}, "hi": MAX_ID}
        cursor = self.coll.find({**scope, "s": {"$lt": HEAD_S}}).sort([("s", -1)])
        found = await cursor.limit(FOLD_BATCH * len(owners)).to_list()
        docs = [d for group in _by_owner(found).values() for d in group[:FOLD_BATCH]]
        now = ObjectId()
        cleanup = [
            d
            for d in docs
            if "gone" in d and _age_s(d.get("folding") or d["gone"], now) > FOLD_CLAIM_S
        ]
        live = [d["_id"] for d in docs if "gone" not in d]
        folded, busy = 0, None
        if live:
            done, removed_meanwhile, busy = await self._fold_live(scope, live)
            folded += done
            cleanup += removed_meanwhile
        pulled: set[ObjectId] = set()
        for doc in cleanup:
            owner = doc["owner_id"]
            if await self.inbox.unchain(owner, doc["s"]):
                pulled.add(owner)
            claim = doc.get("folding")
            same = {"folding": claim} if claim is not None else {"folding": {"$exists": False}}
            async with fenced():
                result = await self.coll.delete_one(
                    {**loose_range(owner), "_id": doc["_id"], "gone": doc["gone"], **same}
                )
            folded += result.deleted_count
        for owner in pulled:
            if await self._trimmed(owner):
                # The pulled entry may have pushed a true one out at a trim in between.
                await self.refill(owner)
        if busy is not None:
            raise busy
        return folded

    async def _fold_live(
        self, scope: dict[str, Any], live: list[ObjectId]
    ) -> tuple[int, list[dict[str, Any]], Contention | None]:
        """Steps 1-3 for the live loose documents `live` (ids) of the owners of `scope`: how
        many went, the claimed ones tombstoned meanwhile (whose entry the caller pulls from the
        chain), and the first Contention of a placement (that owner's claims are kept)."""
        token = ObjectId()
        for chunk in chunked(live, CLAIM_IDS):
            # By `_id` alone (a broadcast on a sharded cluster, off the request path): with the
            # owners' `$in` beside it the embedded server multiplies the two lists' costs (a
            # pass of 100 owners' 3,000 entries took minutes).
            async with fenced():
                await self.coll.update_many(
                    {"_id": {"$in": chunk}, "hi": MAX_ID, "gone": {"$exists": False}},
                    {"$set": {"folding": token}},
                )
        claimed = await self.coll.find({**scope, "folding": token}).to_list()
        if not claimed or _age_s(token, ObjectId()) > FOLD_CLAIM_S / 2:
            return 0, [], None
        groups = _by_owner(claimed)
        # a fold request has no entry
        entries = {o: [d["items"][0] for d in group if d["items"]] for o, group in groups.items()}
        heads = await self.inbox.fill_heads({o: e for o, e in entries.items() if e})
        placed: list[ObjectId] = []  # owners
        held = 0  # their claimed documents
        busy: Contention | None = None
        for owner, group in groups.items():
            head = heads.get(owner)
            there = {i["s"] for i in head["items"]} if head is not None else set()
            rest = [i for i in entries[owner] if i["s"] not in there]
            try:
                if rest:  # what the heads could not take: the general placement
                    await self.inbox.place(owner, rest)
                    over = await self._over_cap(owner)
                else:
                    over = head is not None and int(head.get("count", 0)) > self.inbox.cap
                if entries[owner] and over:
                    await self.trim(owner)
            except Contention as exc:
                busy = busy or exc
                continue
            placed.append(owner)
            held += len(group)
        if not placed:
            return 0, [], busy
        done = {"owner_id": {"$in": placed}, "hi": MAX_ID, "folding": token}
        async with fenced():
            result = await self.coll.delete_many({**done, "gone": {"$exists": False}})
        if result.deleted_count == held:
            return result.deleted_count, [], busy
        left = await self.coll.find({**done, "gone": {"$exists": True}}).to_list()
        return result.deleted_count, left, busy

    async def _over_cap(self, owner: ObjectId) -> bool:
        """Whether the chain may hold more than TIMELINE_MAX: its head's `count` (which only
        over-states) says so; a trim's read of the whole chain is saved otherwise."""
        head = await self.inbox.bucket(owner, MAX_ID, {"count": 1})
        return head is None or int(head.get("count", 0)) > self.inbox.cap

    async def _trimmed(self, owner: ObjectId) -> bool:
        head = await self.inbox.bucket(owner, MAX_ID, {"trimmed": 1})
        return head is not None and bool(head.get("trimmed"))
