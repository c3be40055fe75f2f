"""Per-author leases: the mutual exclusion that lets N workers share one outbox.

The handlers are written for events of one author being applied one at a time (events of
different authors may run in parallel). A worker therefore first takes the author's lease, a
document `{_id: author_id, owner, until}` in `author_leases`, with one conditional upsert:

    update_one({_id: A, $or: [{until: {$lte: now}}, {owner: me}]},
               {$set: {owner: me, until: now + lease}}, upsert=True)

If another worker holds an unexpired lease the filter does not match, the upsert tries to
insert a second document with `_id: A` and fails with a duplicate-key error: the unique `_id`
index makes the acquisition atomic on any MongoDB, without transactions. A crashed worker's
lease simply expires. A live worker renews its leases while it works (fanout.worker), and
stops writing for an author whose lease it could not renew.

Leases compare client clocks (`until` is written by the worker): keep the workers' clocks in
sync (NTP); the lease time is chosen to be far larger than any plausible skew.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.storage.store import Collection


class AuthorLeases:
    """The author leases of one store (its `author_leases` collection)."""

    def __init__(self, coll: Collection) -> None:
        self.coll = coll

    async def acquire(self, author_id: ObjectId, owner: str, now: datetime, lease_s: float) -> bool:
        """Take (or extend) the lease on `author_id`; False if another owner holds it."""
        try:
            await self.coll.update_one(
                {"_id": author_id, "$or": [{"until": {"$lte": now}}, {"owner": owner}]},
                {"$set": {"owner": owner, "until": now + timedelta(seconds=lease_s)}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def renew(self, author_id: ObjectId, owner: str, now: datetime, lease_s: float) -> bool:
        """Extend a lease this owner holds; False if it was lost (expired and taken over)."""
        result = await self.coll.update_one(
            {"_id": author_id, "owner": owner},
            {"$set": {"until": now + timedelta(seconds=lease_s)}},
        )
        return result.matched_count == 1

    async def release(self, author_id: ObjectId, owner: str) -> None:
        await self.coll.delete_one({"_id": author_id, "owner": owner})

    async def release_all(self, owner: str) -> int:
        """Every lease `owner` holds; how many there were."""
        result = await self.coll.delete_many({"owner": owner})
        return int(result.deleted_count)

    async def held(self, now: datetime, by_others_than: str) -> list[ObjectId]:
        """Authors whose lease another owner holds: their events are not worth looking at."""
        cursor = self.coll.find(
            {"until": {"$gt": now}, "owner": {"$ne": by_others_than}}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor]
