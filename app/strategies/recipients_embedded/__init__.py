"""recipients-embedded: each status carries its audience (the author and the author's friends)
in an array with a multikey `(audience, _id)` index; a page is one indexed equality query.

Posting computes the audience synchronously (friends see it at once, no worker needed), the
worker re-reconciles it. Friend adds the new friend to the author's newest TIMELINE_MAX statuses
(older ones can never reach a timeline: the reader already sees TIMELINE_MAX newer ones of the
same author). Unfriend pulls the ex-friend from every status of the author. A delete can slide
the author's window down onto older statuses that missed a bounded backfill; the
`AudienceWatermark` records how far down audiences are complete, so only those are reconciled.

Every write to statuses here is per document (`_update_each`), never one multi-document
`update_many`, and goes through `app.pipeline.checkpoint.fenced_write`. The API's transactions write
statuses too, and on the embedded server a non-transactional multi-document write that meets a
transaction's uncommitted write retries the whole statement inside the server, for ever, while
its own partial writes make the transactions conflict and retry in turn (a livelock, three API
clients were enough). Under the worker, with transactions, each batch of single-document updates
is a transaction of its own: a conflict surfaces at once and is retried by the driver until the
lease's deadline, and nothing is left retrying in the server after the worker gave up. Without
transactions (a standalone mongod) the updates are plain single-document writes, which hold
nothing a transaction waits on and which mongod interrupts at the fence's `maxTimeMS`.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne

from app.pipeline.checkpoint import fenced, fenced_write
from app.storage.chunks import chunked
from app.storage.db import Session
from app.storage.shard_plan import ShardPlan
from app.storage.store import Collection
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery
from app.strategies.paging import Documents, count_newer, read_page, timeline_ids
from app.strategies.truth import window_floor

# Per-document updates sent per unordered bulk write: one round trip for a whole window (the
# window is TIMELINE_MAX statuses), while an unfriend over thousands of statuses still goes in
# commands of bounded size.
UPDATE_BATCH = 1000

AUDIENCE_INDEX = IndexModel(
    [("audience", ASCENDING), ("_id", DESCENDING)], name="audience_1__id_-1"
)


WATERMARKS = "audience_watermarks"
# How its collection spreads over a cluster (app/storage/sharding.py, docs/scaling.md).
SHARDS = (ShardPlan(WATERMARKS, (("author_id", "hashed"),), "read beside the author's"),)


class RecipientsEmbedded:
    name = "recipients_embedded"
    reads_truth = False

    def __init__(self, collab: Collaborators, watermarks: Collection) -> None:
        self.max_items = collab.max_items
        self.statuses = collab.statuses
        self.graph = collab.graph
        self.watermarks = watermarks
        self.pages = Documents(collab.statuses, "_id", collab.max_items)

    async def ensure_indexes(self) -> None:
        await self.statuses.create_indexes([AUDIENCE_INDEX])

    # -- reading -------------------------------------------------------------------------------
    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        scope = {"audience": user_id}
        return await read_page(
            self.pages, scope, self.max_items, limit=limit, before=before, after=after
        )

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        return await count_newer(self.pages, {"audience": user_id}, after)

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        return self.pages.first_page_query({"audience": user_id}, limit)

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return await timeline_ids(self.pages, {"audience": user_id}, self.max_items)

    # -- writes --------------------------------------------------------------------------------
    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """The audience went in with the status (`prepare_status`)."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """Gone with the status."""

    async def after_post(self, status: dict[str, Any]) -> None:
        """Nothing to do after the commit."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """Nothing to do after the commit."""

    async def rebuild_author(self, user_id: ObjectId) -> int:
        return 0  # rebuild is by author already

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return 0  # nobody is skipped: audiences hold every friend

    async def _update_each(self, flt: dict[str, Any], update: dict[str, Any]) -> int:
        """`update_many(flt, update)` as one single-document update per matching status (see the
        module docstring); each keeps `flt`'s conditions, so a status that stopped matching
        meanwhile is left alone. Returns how many were modified."""
        coll = self.statuses
        ids = [d["_id"] async for d in coll.find(flt, {"_id": 1})]
        conditions = {k: v for k, v in flt.items() if k != "_id"}
        modified = 0
        for chunk in chunked(ids, UPDATE_BATCH):
            ops = [UpdateOne({**conditions, "_id": i}, update) for i in chunk]

            async def write(session: Session, ops: list[UpdateOne] = ops) -> int:
                result = await coll.bulk_write(ops, ordered=False, session=session)
                return result.modified_count

            modified += await fenced_write(coll.database.client, write)
        return modified

    async def _full_audience(
        self, author_id: ObjectId, *, session: Session = None
    ) -> list[ObjectId]:
        return [author_id, *await self.graph.friend_ids(author_id, session=session)]

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        status["audience"] = await self._full_audience(status["author_id"], session=session)

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        audience = await self._full_audience(author_id)
        coll = self.statuses

        async def write(session: Session) -> None:
            await coll.update_one(
                {"author_id": author_id, "_id": status_id},
                {"$set": {"audience": audience}},
                session=session,
            )

        await fenced_write(coll.database.client, write)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        if await self.graph.are_friends(author_id, other_id):
            floor = await window_floor(self.statuses, author_id, self.max_items)
            flt: dict[str, Any] = {"author_id": author_id}
            if floor is not None:
                flt["_id"] = {"$gte": floor}
            await self._update_each(flt, {"$addToSet": {"audience": other_id}})
            if floor is not None:
                # Older statuses did not get `other_id`: complete only from the floor up.
                async with fenced():
                    await self.watermarks.update_one(
                        {"author_id": author_id}, {"$max": {"complete_from": floor}}, upsert=True
                    )
        else:
            await self._update_each(
                {"author_id": author_id, "audience": other_id}, {"$pull": {"audience": other_id}}
            )

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self._complete_window(author_id)

    async def _complete_window(self, author_id: ObjectId) -> int:
        """Give every status in the author's window the full audience, where it may lack it."""
        marks = self.watermarks
        mark = await marks.find_one({"author_id": author_id})
        if mark is None:
            return 0  # every status of the author has its full audience
        floor = await window_floor(self.statuses, author_id, self.max_items)
        if floor is not None and floor >= mark["complete_from"]:
            return 0
        flt: dict[str, Any] = {"author_id": author_id, "_id": {"$lt": mark["complete_from"]}}
        if floor is not None:
            flt["_id"]["$gte"] = floor
        audience = await self._full_audience(author_id)
        modified = await self._update_each(flt, {"$set": {"audience": audience}})
        async with fenced():
            if floor is None:
                await marks.delete_one(
                    {"author_id": author_id, "complete_from": mark["complete_from"]}
                )
            else:
                await marks.update_one({"author_id": author_id}, {"$min": {"complete_from": floor}})
        return modified

    async def rebuild(self, user_id: ObjectId) -> int:
        """Recompute the audiences of `user_id`'s statuses: full in the window, and no one who is
        no longer a friend anywhere."""
        audience = await self._full_audience(user_id)
        floor = await window_floor(self.statuses, user_id, self.max_items)
        window: dict[str, Any] = {"author_id": user_id}
        if floor is not None:
            window["_id"] = {"$gte": floor}
        changed = await self._update_each(window, {"$set": {"audience": audience}})
        marks = self.watermarks
        if floor is not None:
            older = {"author_id": user_id, "_id": {"$lt": floor}}
            changed += await self._update_each(
                {**older, "audience": {"$elemMatch": {"$nin": audience}}},
                {"$pull": {"audience": {"$nin": audience}}},
            )
            changed += await self._update_each(
                {**older, "audience": {"$exists": False}}, {"$set": {"audience": [user_id]}}
            )
            async with fenced():
                await marks.update_one(
                    {"author_id": user_id}, {"$set": {"complete_from": floor}}, upsert=True
                )
        else:
            async with fenced():
                await marks.delete_one({"author_id": user_id})
        return changed


def build(collab: Collaborators) -> RecipientsEmbedded:
    return RecipientsEmbedded(collab, collab.collection(WATERMARKS))
