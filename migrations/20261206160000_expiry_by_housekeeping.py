"""Expiry by the workers' housekeeping instead of TTL indexes (docs/operations.md, "Expiry").

Forward creates the two range indexes the housekeeping reads (`events` `(done_at, _id)` over
done events, `idempotency_keys` `(created_at, _id)`; frozen copies of app/storage/models.py's,
created
by initialising Beanie with the documents below, as the service does at start-up), then drops
the two TTL indexes: the new indexes exist first, so there is no moment without expiry. No data
moves; a worker of this version prunes on its next pass.

Backward recreates the TTL indexes (what the previous version declares and relies on) and drops
the range indexes.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

DONE_EVENT_TTL_SECONDS = 3600
IDEMPOTENCY_TTL_SECONDS = 24 * 3600

# collection: (the TTL index of the previous version, the range index of this one)
INDEXES: dict[str, tuple[IndexModel, IndexModel]] = {
    "events": (
        IndexModel(
            [("done_at", ASCENDING)],
            expireAfterSeconds=DONE_EVENT_TTL_SECONDS,
            partialFilterExpression={"state": "done"},
        ),
        IndexModel(
            [("done_at", ASCENDING), ("_id", ASCENDING)],
            partialFilterExpression={"state": "done"},
        ),
    ),
    "idempotency_keys": (
        IndexModel([("created_at", ASCENDING)], expireAfterSeconds=IDEMPOTENCY_TTL_SECONDS),
        IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)]),
    ),
}


class Event(Document):
    class Settings:
        name = "events"
        indexes = [INDEXES["events"][1]]


class IdempotencyRecord(Document):
    class Settings:
        name = "idempotency_keys"
        indexes = [INDEXES["idempotency_keys"][1]]


def _name(index: IndexModel) -> str:
    return str(index.document["name"])


async def forward(db: AsyncDatabase[Any]) -> None:
    """The range indexes, then without the TTL indexes (a second run changes nothing)."""
    for coll, (ttl, ranged) in INDEXES.items():
        await db[coll].create_indexes([ranged])
        if _name(ttl) in await db[coll].index_information():
            await db[coll].drop_index(_name(ttl))


async def backward(db: AsyncDatabase[Any]) -> None:
    """The TTL indexes, then without the range indexes."""
    for coll, (ttl, ranged) in INDEXES.items():
        await db[coll].create_indexes([ttl])
        if _name(ranged) in await db[coll].index_information():
            await db[coll].drop_index(_name(ranged))


class Forward:
    @free_fall_migration(document_models=[Event, IdempotencyRecord])
    async def expire_by_housekeeping(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): index DDL inside a multi-document
        # transaction is refused by servers before 4.4, and a drop by all.
        await forward(Event.get_pymongo_collection().database)


class Backward:
    @free_fall_migration(document_models=[Event, IdempotencyRecord])
    async def expire_by_ttl(self, session: Any) -> None:
        await backward(Event.get_pymongo_collection().database)
