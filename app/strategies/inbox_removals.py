"""Removals from inbox_buckets' chains (app/strategies/inbox_layout.py): one status, any set
of entries (an unfriended author's, what a rebuild finds wrong), and the trim to TIMELINE_MAX.
Each bucket is changed with a condition on its version and the head's `count` is lowered only
by what was removed here, so it keeps over-stating, never under-stating."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId

from app.db import Session
from app.strategies.inbox_chain import MAX_ID, PLACE_ATTEMPTS, Chain, Conflict
from app.strategies.inbox_layout import InboxPlacement


class Inbox(InboxPlacement):
    """The bucket chains of one `inbox_buckets` collection."""

    async def _pull(
        self,
        owner: ObjectId,
        bucket: dict[str, Any],
        ids: list[ObjectId],
        last: bool,
        session: Session,
    ) -> bool:
        """Remove `ids` (all present at the bucket's version) from `bucket`. The last bucket of
        the chain goes when emptied; one in the middle stays, empty, since its range is what
        links the chain. False on a concurrent change (re-read and retry)."""
        flt = {"_id": bucket["_id"], "owner_id": owner, "v": bucket["v"]}
        is_head = bucket["hi"] == MAX_ID
        if last and not is_head and len(ids) == len(bucket["items"]):
            deleted = await self._write(session, lambda s: self.coll.delete_one(flt, session=s))
            return bool(deleted.deleted_count == 1)
        update: dict[str, Any] = {
            "$pull": {"items": {"s": {"$in": ids}}},
            "$inc": {"v": 1, **({"count": -len(ids)} if is_head else {})},
        }
        result = await self._write(session, lambda s: self.coll.update_one(flt, update, session=s))
        return bool(result.modified_count == 1)

    async def remove_status(
        self, owner: ObjectId, status_id: ObjectId, *, session: Session = None
    ) -> int:
        """Remove one status from the owner's chain (and from any interrupted split's copy)."""
        found = await self.coll.find(
            {"items.s": status_id, "owner_id": owner}, session=session
        ).to_list()
        if not found:
            return 0
        chained = max(found, key=lambda b: b["hi"])
        removed = 0
        for bucket in found:
            counted = bucket is chained and bucket["hi"] == MAX_ID
            flt = {"_id": bucket["_id"], "owner_id": owner, "items.s": status_id}
            update: dict[str, Any] = {
                "$pull": {"items": {"s": status_id}},
                "$inc": {"v": 1, **({"count": -1} if counted else {})},
            }
            result = await self._update_one(flt, update, session)
            if bucket is chained and result.modified_count:
                removed = 1
                if not counted:
                    await self._count(owner, -1, session)
        return removed

    async def remove(
        self, owner: ObjectId, select: Callable[[Chain], set[ObjectId]], *, session: Session = None
    ) -> int:
        """Remove the entries `select(chain)` names from the owner's chain, whatever changes
        concurrently. Returns how many this call removed."""
        return (await self._remove(owner, select, None, session))[0]

    async def _remove(
        self,
        owner: ObjectId,
        select: Callable[[Chain], set[ObjectId]],
        first: Chain | None,
        session: Session,
    ) -> tuple[int, Chain]:
        """`remove`, starting from `first` when the caller has just read the chain; also returns
        the last chain read (in which `select` named nothing)."""
        removed = 0
        chain = first
        for _ in range(PLACE_ATTEMPTS):
            chain = chain or await self.chain(owner, session=session)
            doomed = select(chain)
            if not doomed:
                return removed, chain
            sealed = 0
            last = True  # bottom up: a bucket is last once every one below it went
            for bucket in reversed(chain.buckets):
                ids = [i["s"] for i in bucket["items"] if i["s"] in doomed]
                emptied = len(ids) == len(bucket["items"]) and bucket["hi"] != MAX_ID
                if ids and await self._pull(owner, bucket, ids, last, session):
                    removed += len(ids)
                    sealed += len(ids) if bucket["hi"] != MAX_ID else 0
                    last = last and emptied
                else:
                    last = False
            await self._count(owner, -sealed, session)
            chain = None
        raise Conflict(f"the buckets of {owner} kept changing")

    async def trim(self, owner: ObjectId, *, session: Session = None) -> int:
        """Drop entries beyond the owner's `cap` newest; returns how many went."""
        return (await self.trimmed(owner, session=session))[0]

    async def trimmed(self, owner: ObjectId, *, session: Session = None) -> tuple[int, int]:
        """`trim`, and how many entries the chain held at its last read. The owner is marked
        trimmed (removals must then refill) before the look that sets the cut, as
        receiver_copies does; a chain already marked when read is that look (at TIMELINE_MAX,
        the steady state, a trim is then one read, the pulls and one read to confirm)."""
        chain = await self.chain(owner, session=session)
        if len(chain.ids()) <= self.cap:
            return 0, len(chain.ids())
        if not (chain.buckets and chain.buckets[0].get("trimmed")):
            await self.mark_trimmed(owner, session=session)
            chain = await self.chain(owner, session=session)
        removed, final = await self._remove(
            owner, lambda c: set(c.ids()[self.cap :]), chain, session
        )
        return removed, len(final.ids())
