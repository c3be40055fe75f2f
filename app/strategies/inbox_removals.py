"""Removals from inbox_buckets' chains (app/strategies/inbox_layout.py): one status, any set
of entries (an unfriended author's, what a rebuild finds wrong), and the trim to TIMELINE_MAX.
Each bucket is changed with a condition on its version and the head's `count` is lowered only
by what was removed here, so it keeps over-stating, never under-stating.

After a removal the chain is compacted (`_compact`): a bucket other than the head left under
half full (the last one: left empty) is merged into the bucket above it, and the last bucket's
range is extended to MIN_ID, so that whatever was removed a chain holds at most
ceil(TIMELINE_MAX / ceil(size / 2)) + 2 documents and a page reads its first bucket and at most
ceil((limit + 1) / ceil(size / 2)) more (one for a page of up to half a bucket)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId

from app.db import Session
from app.strategies.inbox_chain import (
    MAX_ID,
    MIN_ID,
    PLACE_ATTEMPTS,
    UNSEALED,
    Chain,
    Conflict,
    half,
)
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
        flt = {"_id": bucket["_id"], "owner_id": owner, "v": bucket["v"], **UNSEALED}
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
        """Remove one status from the owner's chain (and from any interrupted split's copy).
        A sealed bucket holding it (a merge in flight) is merged first, then the status is
        removed from the bucket that took it."""
        removed = 0
        for _ in range(PLACE_ATTEMPTS):
            found = await self.coll.find(
                {"items.s": status_id, "owner_id": owner}, session=session
            ).to_list()
            if not found:
                return removed
            if any(b.get("sealed") for b in found):
                await self._collect(await self.chain(owner, session=session), session)
                continue
            chained = max(found, key=lambda b: b["hi"])
            missed = False
            for bucket in found:
                counted = bucket is chained and bucket["hi"] == MAX_ID
                flt = {"_id": bucket["_id"], "owner_id": owner, "items.s": status_id, **UNSEALED}
                update: dict[str, Any] = {
                    "$pull": {"items": {"s": status_id}},
                    "$inc": {"v": 1, **({"count": -1} if counted else {})},
                }
                result = await self._update_one(flt, update, session)
                missed = missed or not result.modified_count
                if bucket is chained and result.modified_count:
                    removed = 1
                    if not counted:
                        await self._count(owner, -1, session)
            if chained["hi"] != MAX_ID and len(chained["items"]) <= half(self.size):
                await self._compact(owner, await self.chain(owner, session=session), session)
            if not missed:
                return removed
            # A bucket changed since the look: gone already, or sealed (look again).
        raise Conflict(f"the buckets of {owner} kept changing")

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
            if await self._collect(chain, session):  # a merge in flight: finished first
                chain = None
                continue
            doomed = select(chain)
            if not doomed:
                return removed, await self._compact(owner, chain, session)
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

    async def _compact(self, owner: ObjectId, chain: Chain, session: Session) -> Chain:
        """Merge each bucket other than the head left under half full (the last one: left
        empty) into the bucket above it, and extend the last bucket's range to MIN_ID (a removal
        that deleted the last bucket left the one above it pointing at nothing, a look-up more
        for every page that reaches it). Best effort: a merge that meets a concurrent change is
        left to the next removal or placement, which finishes it; the chain is correct
        throughout, only less compact. Returns the last chain read."""
        least = half(self.size)
        for _ in range(PLACE_ATTEMPTS):
            if await self._collect(chain, session):
                chain = await self.chain(owner, session=session)
                continue
            buckets = chain.buckets
            last = len(buckets) - 1
            small = next(
                (
                    b
                    for k, b in enumerate(buckets)
                    if k and len(b["items"]) < (least if k < last else 1)
                ),
                None,
            )
            if small is None:
                if buckets and buckets[-1]["lo"] != MIN_ID:
                    bottom = buckets[-1]
                    await self._update_one(
                        {"_id": bottom["_id"], "owner_id": owner, "lo": bottom["lo"], **UNSEALED},
                        {"$set": {"lo": MIN_ID}, "$inc": {"v": 1}},
                        session,
                    )
                return chain
            await self._seal(small, session)  # the next round's `_collect` merges it
            chain = await self.chain(owner, session=session)
        return chain
