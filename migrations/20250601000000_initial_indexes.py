"""The indexes of every collection as of the first release (frozen copies of app/storage/models.py).

Forward creates them (Beanie's init_beanie does, for the documents below); Backward drops
them again. The strategy-specific `(audience, _id)` index is built by `timeline
switch-strategy --to recipients_embedded` (or at start-up under that strategy), not here.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from pymongo import ASCENDING, DESCENDING, IndexModel


class User(Document):
    class Settings:
        name = "users"
        indexes = [
            IndexModel([("handle", ASCENDING)], unique=True),
            IndexModel([("token_hash", ASCENDING)], unique=True),
        ]


class FriendRequest(Document):
    class Settings:
        name = "friend_requests"
        indexes = [
            IndexModel([("from_id", ASCENDING), ("to_id", ASCENDING)], unique=True),
            IndexModel([("to_id", ASCENDING), ("created_at", DESCENDING)]),
        ]


class Friendship(Document):
    class Settings:
        name = "friendships"
        indexes = [
            IndexModel([("user_id", ASCENDING), ("friend_id", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("_id", DESCENDING)]),
        ]


class Status(Document):
    class Settings:
        name = "statuses"
        indexes = [IndexModel([("author_id", ASCENDING), ("_id", DESCENDING)])]


class TimelineEntry(Document):
    class Settings:
        name = "timeline_entries"
        indexes = [
            IndexModel([("owner_id", ASCENDING), ("status_id", DESCENDING)], unique=True),
            IndexModel([("status_id", ASCENDING)]),
            IndexModel([("owner_id", ASCENDING), ("author_id", ASCENDING)]),
        ]


class TimelineMeta(Document):
    class Settings:
        name = "timeline_meta"
        indexes = [IndexModel([("owner_id", ASCENDING)], unique=True)]


class AudienceWatermark(Document):
    class Settings:
        name = "audience_watermarks"
        indexes = [IndexModel([("author_id", ASCENDING)], unique=True)]


class Event(Document):
    class Settings:
        name = "events"
        indexes = [
            IndexModel([("state", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("author_id", ASCENDING), ("state", ASCENDING)]),
            IndexModel(
                [("done_at", ASCENDING)],
                expireAfterSeconds=3600,
                partialFilterExpression={"state": "done"},
            ),
        ]


class IdempotencyRecord(Document):
    class Settings:
        name = "idempotency_keys"
        indexes = [
            IndexModel([("user_id", ASCENDING), ("key", ASCENDING)], unique=True),
            IndexModel([("created_at", ASCENDING)], expireAfterSeconds=24 * 3600),
        ]


MODELS: list[type[Document]] = [
    User,
    FriendRequest,
    Friendship,
    Status,
    TimelineEntry,
    TimelineMeta,
    AudienceWatermark,
    Event,
    IdempotencyRecord,
]


class Forward:
    @free_fall_migration(document_models=MODELS)
    async def create_indexes(self, session: Any) -> None:
        """Nothing to do by hand: initialising Beanie with the models above created them."""


class Backward:
    @free_fall_migration(document_models=[])
    async def drop_indexes(self, session: Any) -> None:
        for model in MODELS:
            await model.get_pymongo_collection().drop_indexes(session=session)
