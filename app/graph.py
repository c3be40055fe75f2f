"""Read helpers over the social graph (the source of truth for friendships)."""

from __future__ import annotations

from bson import ObjectId

from app.db import Session
from app.models import Friendship, utcnow

# Friend count bound, as in Facebook's 5,000: it bounds the `$in` list of a fan-out-on-read page
# and the size of a recipients_embedded audience array (5,001 ids * ~17 B ≈ 85 KB, well under
# MongoDB's 16 MB document limit) and the fan-out of one post.
MAX_FRIENDS = 5000


async def friend_ids(user_id: ObjectId, *, session: Session = None) -> list[ObjectId]:
    coll = Friendship.get_pymongo_collection()
    cursor = coll.find({"user_id": user_id}, {"friend_id": 1, "_id": 0}, session=session)
    return [doc["friend_id"] async for doc in cursor]


async def are_friends(a: ObjectId, b: ObjectId, *, session: Session = None) -> bool:
    coll = Friendship.get_pymongo_collection()
    return (
        await coll.find_one({"user_id": a, "friend_id": b}, {"_id": 1}, session=session) is not None
    )


async def can_see(viewer: ObjectId, author: ObjectId) -> bool:
    return viewer == author or await are_friends(viewer, author)


async def link(a: ObjectId, b: ObjectId, *, session: Session) -> None:
    """Write both edges of a friendship (idempotent: upserts on the unique edge key)."""
    edges = Friendship.get_pymongo_collection()
    now = utcnow()
    for x, y in ((a, b), (b, a)):
        await edges.update_one(
            {"user_id": x, "friend_id": y},
            {"$setOnInsert": {"user_id": x, "friend_id": y, "since": now}},
            upsert=True,
            session=session,
        )


async def unlink(a: ObjectId, b: ObjectId, *, session: Session) -> None:
    """Remove both edges of a friendship (idempotent)."""
    await Friendship.get_pymongo_collection().delete_many(
        {"$or": [{"user_id": a, "friend_id": b}, {"user_id": b, "friend_id": a}]},
        session=session,
    )
