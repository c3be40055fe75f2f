"""recipients-embedded: each status carries its audience (the author and the author's friends)
in an array with a multikey `(audience, _id)` index; a page is one indexed equality query.

Posting computes the audience synchronously (friends see it at once, no worker needed), the
worker re-reconciles it. Friend adds the new friend to the author's newest TIMELINE_MAX statuses
(older ones can never reach a timeline: the reader already sees TIMELINE_MAX newer ones of the
same author). Unfriend pulls the ex-friend from every status of the author. A delete can slide
the author's window down onto older statuses that missed a bounded backfill; the
`AudienceWatermark` records how far down audiences are complete, so only those are reconciled.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from app import graph
from app.db import Session
from app.models import AudienceWatermark, Status
from app.strategies.base import TimelineStrategy
from app.strategies.common import window_floor

AUDIENCE_INDEX = IndexModel(
    [("audience", ASCENDING), ("_id", DESCENDING)], name="audience_1__id_-1"
)


class RecipientsEmbedded(TimelineStrategy):
    name = "recipients_embedded"

    def collection(self) -> AsyncCollection[Any]:
        return Status.get_pymongo_collection()

    async def ensure_indexes(self) -> None:
        await self.collection().create_indexes([AUDIENCE_INDEX])

    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        return {"audience": user_id}

    async def _full_audience(
        self, author_id: ObjectId, *, session: Session = None
    ) -> list[ObjectId]:
        return [author_id, *await graph.friend_ids(author_id, session=session)]

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        status["audience"] = await self._full_audience(status["author_id"], session=session)

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        audience = await self._full_audience(author_id)
        await self.collection().update_one(
            {"author_id": author_id, "_id": status_id}, {"$set": {"audience": audience}}
        )

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        coll = self.collection()
        if await graph.are_friends(author_id, other_id):
            floor = await window_floor(author_id, self.max_items)
            flt: dict[str, Any] = {"author_id": author_id}
            if floor is not None:
                flt["_id"] = {"$gte": floor}
            await coll.update_many(flt, {"$addToSet": {"audience": other_id}})
            if floor is not None:
                # Older statuses did not get `other_id`: complete only from the floor up.
                await AudienceWatermark.get_pymongo_collection().update_one(
                    {"author_id": author_id}, {"$max": {"complete_from": floor}}, upsert=True
                )
        else:
            await coll.update_many(
                {"author_id": author_id, "audience": other_id}, {"$pull": {"audience": other_id}}
            )

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self._complete_window(author_id)

    async def _complete_window(self, author_id: ObjectId) -> int:
        """Give every status in the author's window the full audience, where it may lack it."""
        marks = AudienceWatermark.get_pymongo_collection()
        mark = await marks.find_one({"author_id": author_id})
        if mark is None:
            return 0  # every status of the author has its full audience
        floor = await window_floor(author_id, self.max_items)
        if floor is not None and floor >= mark["complete_from"]:
            return 0
        flt: dict[str, Any] = {"author_id": author_id, "_id": {"$lt": mark["complete_from"]}}
        if floor is not None:
            flt["_id"]["$gte"] = floor
        audience = await self._full_audience(author_id)
        result = await self.collection().update_many(flt, {"$set": {"audience": audience}})
        if floor is None:
            await marks.delete_one({"author_id": author_id, "complete_from": mark["complete_from"]})
        else:
            await marks.update_one({"author_id": author_id}, {"$min": {"complete_from": floor}})
        return result.modified_count

    async def rebuild(self, user_id: ObjectId) -> int:
        """Recompute the audiences of `user_id`'s statuses: full in the window, and no one who is
        no longer a friend anywhere."""
        audience = await self._full_audience(user_id)
        floor = await window_floor(user_id, self.max_items)
        coll = self.collection()
        window: dict[str, Any] = {"author_id": user_id}
        if floor is not None:
            window["_id"] = {"$gte": floor}
        changed = (await coll.update_many(window, {"$set": {"audience": audience}})).modified_count
        if floor is not None:
            older = {"author_id": user_id, "_id": {"$lt": floor}}
            changed += (
                await coll.update_many(older, {"$pull": {"audience": {"$nin": audience}}})
            ).modified_count
            changed += (
                await coll.update_many(
                    {**older, "audience": {"$exists": False}}, {"$set": {"audience": [user_id]}}
                )
            ).modified_count
            await AudienceWatermark.get_pymongo_collection().update_one(
                {"author_id": user_id}, {"$set": {"complete_from": floor}}, upsert=True
            )
        else:
            await AudienceWatermark.get_pymongo_collection().delete_one({"author_id": user_id})
        return changed
