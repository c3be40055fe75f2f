"""The social graph (the source of truth for friendships): reads for everyone, the edge and
counter writes for app.domain.friends."""

from __future__ import annotations

from bson import ObjectId

from app.storage.db import Session
from app.storage.models import utcnow
from app.storage.store import Store

# Friend count bound, as in Facebook's 5,000: it bounds the `$in` list of a fan-out-on-read page
# and the size of a recipients_embedded audience array (5,001 ids * ~17 B ≈ 85 KB, well under
# MongoDB's 16 MB document limit) and the fan-out of one post.
MAX_FRIENDS = 5000


class Graph:
    """Friendship edges (`friendships`, both directions stored) and each user's counted
    `friend_count`, over one store."""

    def __init__(self, store: Store) -> None:
        self.edges = store.friendships
        self.users = store.users

    async def friend_ids(self, user_id: ObjectId, *, session: Session = None) -> list[ObjectId]:
        cursor = self.edges.find({"user_id": user_id}, {"friend_id": 1, "_id": 0}, session=session)
        return [doc["friend_id"] async for doc in cursor]

    async def are_friends(self, a: ObjectId, b: ObjectId, *, session: Session = None) -> bool:
        found = await self.edges.find_one(
            {"user_id": a, "friend_id": b}, {"_id": 1}, session=session
        )
        return found is not None

    async def can_see(self, viewer: ObjectId, author: ObjectId) -> bool:
        return viewer == author or await self.are_friends(viewer, author)

    async def friend_count(self, user_id: ObjectId) -> int:
        """Friendships counted against MAX_FRIENDS (see `reserve`)."""
        await self._counted(user_id, session=None)
        doc = await self.users.find_one({"_id": user_id}, {"friend_count": 1})
        return int((doc or {}).get("friend_count", 0))

    async def _counted(self, user_id: ObjectId, *, session: Session) -> None:
        """Give a user created before `friend_count` existed its count, from the edges."""
        doc = await self.users.find_one({"_id": user_id}, {"friend_count": 1}, session=session)
        if doc is not None and "friend_count" not in doc:
            n = await self.edges.count_documents({"user_id": user_id}, session=session)
            await self.users.update_one(
                {"_id": user_id, "friend_count": {"$exists": False}},
                {"$set": {"friend_count": n}},
                session=session,
            )

    async def reserve(self, user_id: ObjectId, *, session: Session) -> bool:
        """Count one more friendship for `user_id`, unless it already has MAX_FRIENDS. One
        conditional `$inc` on the user document: atomic on any MongoDB, so concurrent accepts
        cannot both take the last place. Called before the edge is written: a crash in between
        leaves the count high (a place lost), never low (the limit exceeded)."""
        await self._counted(user_id, session=session)
        taken = await self.users.update_one(
            {"_id": user_id, "friend_count": {"$lt": MAX_FRIENDS}},
            {"$inc": {"friend_count": 1}},
            session=session,
        )
        return taken.modified_count == 1

    async def unreserve(self, user_id: ObjectId, *, session: Session) -> None:
        """Give back a place taken by `reserve` (or by an edge now deleted)."""
        await self.users.update_one(
            {"_id": user_id, "friend_count": {"$gt": 0}},
            {"$inc": {"friend_count": -1}},
            session=session,
        )

    async def link(self, a: ObjectId, b: ObjectId, *, session: Session) -> tuple[bool, bool]:
        """Write both edges of a friendship (idempotent: upserts on the unique edge key).
        Returns whether each edge (a→b, b→a) is new; the caller counts only new ones."""
        now = utcnow()
        new: list[bool] = []
        for x, y in ((a, b), (b, a)):
            written = await self.edges.update_one(
                {"user_id": x, "friend_id": y},
                {"$setOnInsert": {"user_id": x, "friend_id": y, "since": now}},
                upsert=True,
                session=session,
            )
            new.append(written.upserted_id is not None)
        return new[0], new[1]

    async def unlink(self, a: ObjectId, b: ObjectId, *, session: Session) -> None:
        """Remove both edges of a friendship (idempotent), giving back each place that an edge
        this call deleted held. Edge first, count second: a crash between leaves it high."""
        for x, y in ((a, b), (b, a)):
            gone = await self.edges.delete_one({"user_id": x, "friend_id": y}, session=session)
            if gone.deleted_count:
                await self.unreserve(x, session=session)
