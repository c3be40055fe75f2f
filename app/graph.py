"""Read helpers over the social graph (the source of truth for friendships)."""

from __future__ import annotations

from bson import ObjectId

from app.db import Session
from app.models import Friendship, User, utcnow

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


async def friend_count(user_id: ObjectId) -> int:
    """Friendships counted against MAX_FRIENDS (see `reserve`)."""
    await _counted(user_id, session=None)
    doc = await User.get_pymongo_collection().find_one({"_id": user_id}, {"friend_count": 1})
    return int((doc or {}).get("friend_count", 0))


async def _counted(user_id: ObjectId, *, session: Session) -> None:
    """Give a user created before `friend_count` existed its count, from the edges."""
    users = User.get_pymongo_collection()
    doc = await users.find_one({"_id": user_id}, {"friend_count": 1}, session=session)
    if doc is not None and "friend_count" not in doc:
        edges = Friendship.get_pymongo_collection()
        n = await edges.count_documents({"user_id": user_id}, session=session)
        await users.update_one(
            {"_id": user_id, "friend_count": {"$exists": False}},
            {"$set": {"friend_count": n}},
            session=session,
        )


async def reserve(user_id: ObjectId, *, session: Session) -> bool:
    """Count one more friendship for `user_id`, unless it already has MAX_FRIENDS. One
    conditional `$inc` on the user document: atomic on any MongoDB, so concurrent accepts
    cannot both take the last place. Called before the edge is written: a crash in between
    leaves the count high (a place lost), never low (the limit exceeded)."""
    await _counted(user_id, session=session)
    taken = await User.get_pymongo_collection().update_one(
        {"_id": user_id, "friend_count": {"$lt": MAX_FRIENDS}},
        {"$inc": {"friend_count": 1}},
        session=session,
    )
    return taken.modified_count == 1


async def unreserve(user_id: ObjectId, *, session: Session) -> None:
    """Give back a place taken by `reserve` (or by an edge now deleted)."""
    await User.get_pymongo_collection().update_one(
        {"_id": user_id, "friend_count": {"$gt": 0}},
        {"$inc": {"friend_count": -1}},
        session=session,
    )


async def link(a: ObjectId, b: ObjectId, *, session: Session) -> tuple[bool, bool]:
    """Write both edges of a friendship (idempotent: upserts on the unique edge key). Returns
    whether each edge (a→b, b→a) is new; the caller counts only new ones (`reserve`)."""
    edges = Friendship.get_pymongo_collection()
    now = utcnow()
    new: list[bool] = []
    for x, y in ((a, b), (b, a)):
        written = await edges.update_one(
            {"user_id": x, "friend_id": y},
            {"$setOnInsert": {"user_id": x, "friend_id": y, "since": now}},
            upsert=True,
            session=session,
        )
        new.append(written.upserted_id is not None)
    return new[0], new[1]


async def unlink(a: ObjectId, b: ObjectId, *, session: Session) -> None:
    """Remove both edges of a friendship (idempotent), giving back each place that an edge
    this call deleted held. Edge first, count second: a crash between leaves the count high."""
    edges = Friendship.get_pymongo_collection()
    for x, y in ((a, b), (b, a)):
        gone = await edges.delete_one({"user_id": x, "friend_id": y}, session=session)
        if gone.deleted_count:
            await unreserve(x, session=session)
