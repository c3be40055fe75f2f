"""Inactive users (TIMELINE_ACTIVE_DAYS): the `user_activity` collection, one document per user
keyed by the user's id, with an index on `last_read_at` (frozen copy of app/storage/models.py's
`UserActivity`).

Forward creates the collection and the index where missing (Beanie would create both at
start-up; here the schema change is explicit). No data to move: a user without a document
counts as active, which is what everyone was before. Backward drops the collection: everyone
counts as active again, and the next fan-outs write copies for all (timelines of users who
were away are reconciled by `timeline rebuild`).
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from pymongo import ASCENDING, IndexModel

COLLECTION = "user_activity"
INDEX = IndexModel([("last_read_at", ASCENDING)])


class UserActivity(Document):
    class Settings:
        name = COLLECTION


class Forward:
    @free_fall_migration(document_models=[UserActivity])
    async def create_user_activity(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): collection DDL inside a
        # multi-document transaction is refused by servers before 4.4, and a drop by all.
        db = UserActivity.get_pymongo_collection().database
        if COLLECTION not in await db.list_collection_names():
            await db.create_collection(COLLECTION)
        await db[COLLECTION].create_indexes([INDEX])


class Backward:
    @free_fall_migration(document_models=[UserActivity])
    async def drop_user_activity(self, session: Any) -> None:
        await UserActivity.get_pymongo_collection().drop()
