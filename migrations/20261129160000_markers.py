"""Read markers (POST /markers): the `markers` collection, one document per user keyed by the
user's id (frozen copy of app/storage/models.py's `Marker`).

Its only index is `_id`'s, which MongoDB builds with the collection, so Forward just creates the
collection where it is missing (MongoDB would also create it on the first marker write; creating
it here keeps the schema change explicit and lets an operator shard or validate it beforehand).
Backward drops it, and with it every user's markers: unread counts fall back to "everything".
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration

COLLECTION = "markers"


class Marker(Document):
    class Settings:
        name = COLLECTION


class Forward:
    @free_fall_migration(document_models=[Marker])
    async def create_markers(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): collection DDL inside a
        # multi-document transaction is refused by servers before 4.4, and a drop by all.
        db = Marker.get_pymongo_collection().database
        if COLLECTION not in await db.list_collection_names():
            await db.create_collection(COLLECTION)


class Backward:
    @free_fall_migration(document_models=[Marker])
    async def drop_markers(self, session: Any) -> None:
        await Marker.get_pymongo_collection().drop()
