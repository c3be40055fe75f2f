"""inbox_buckets: the `inbox_buckets` collection and its two indexes (frozen copy of
app/storage/models.py's `InboxBucket`): the unique chain index (owner_id, hi) and the multikey
(items.s, owner_id) index that finds which buckets hold a status.

Forward creates the collection and the indexes where missing (Beanie would create both at
start-up; here the schema change is explicit). No data to move: the strategy's derived data is
built by `timeline switch-strategy inbox_buckets` (or `timeline rebuild` when it is configured).
Backward drops the collection; a deployment still configured for inbox_buckets must switch to
another strategy first.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from pymongo import ASCENDING, IndexModel

COLLECTION = "inbox_buckets"
INDEXES = [
    IndexModel([("owner_id", ASCENDING), ("hi", ASCENDING)], unique=True),
    IndexModel([("items.s", ASCENDING), ("owner_id", ASCENDING)]),
]


class InboxBucket(Document):
    class Settings:
        name = COLLECTION


class Forward:
    @free_fall_migration(document_models=[InboxBucket])
    async def create_inbox_buckets(self, session: Any) -> None:
        # Outside the runner's transaction (session unused), as the user_activity migration.
        db = InboxBucket.get_pymongo_collection().database
        if COLLECTION not in await db.list_collection_names():
            await db.create_collection(COLLECTION)
        await db[COLLECTION].create_indexes(INDEXES)


class Backward:
    @free_fall_migration(document_models=[InboxBucket])
    async def drop_inbox_buckets(self, session: Any) -> None:
        await InboxBucket.get_pymongo_collection().drop()
