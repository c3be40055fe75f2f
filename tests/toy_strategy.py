"""A sixth strategy, written the way docs/design.md ("How to add a strategy") says: a storage
layout for the materialized-timeline machinery, a few lines of strategy around it, and one
registration. It is a toy: each reader's whole timeline is ONE document (an unsorted array of
entries, sorted when read), so a long timeline with long texts would pass MongoDB's 16 MB
document limit. tests/test_toy_strategy.py runs it through the behaviour suite and the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from app.pipeline.checkpoint import fenced
from app.storage.db import Session
from app.storage.store import Collection
from app.strategies import Collaborators, StrategySpec, register
from app.strategies.contract import Page, PageQuery, StatusView
from app.strategies.materialized import Item, MaterializedTimelines

NAME = "one_document"
COLLECTION = "one_document_timelines"
DUPLICATE_KEY = 11000


def _entry(status: dict[str, Any]) -> dict[str, Any]:
    # Deterministic per status (a status never changes), so `$addToSet` adds it at most once.
    return {
        "s": status["_id"],
        "a": status["author_id"],
        "n": status["author"],
        "t": status["text"],
        "c": status["created_at"],
    }


class OneDocument:
    """The Layout: `{_id: owner, items: [entry...], trimmed, owed}`."""

    def __init__(self, coll: Collection, max_items: int) -> None:
        self.coll = coll
        self.max_items = max_items

    async def _entries(self, owner: ObjectId) -> list[dict[str, Any]]:
        doc = await self.coll.find_one({"_id": owner}, {"items": 1})
        items: list[dict[str, Any]] = (doc or {}).get("items", [])
        return sorted(items, key=lambda i: i["s"], reverse=True)

    async def deliver(
        self, owners: list[ObjectId], status: dict[str, Any]
    ) -> tuple[int, list[ObjectId]]:
        item = _entry(status)
        ops = [UpdateOne({"_id": o}, {"$addToSet": {"items": item}}, upsert=True) for o in owners]
        try:
            async with fenced():
                result = await self.coll.bulk_write(ops, ordered=False)
            new = result.modified_count + result.upserted_count
        except BulkWriteError as exc:  # two first writes raced to create one document
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            new = int(exc.details.get("nModified", 0)) + int(exc.details.get("nUpserted", 0))
        over = self.coll.find(
            {"_id": {"$in": owners}, f"items.{self.max_items}": {"$exists": True}}, {"_id": 1}
        )
        return new, [d["_id"] async for d in over]

    async def place(self, owner: ObjectId, statuses: list[dict[str, Any]]) -> int:
        present = {i["s"] for i in await self._entries(owner)}
        new = [_entry(s) for s in statuses if s["_id"] not in present]
        if new:
            async with fenced():
                await self.coll.update_one(
                    {"_id": owner}, {"$addToSet": {"items": {"$each": new}}}, upsert=True
                )
        return len(new)

    async def items(self, owner: ObjectId, floor: ObjectId | None = None) -> list[Item]:
        found = [(i["s"], i["a"]) for i in await self._entries(owner)]
        return found if floor is None else [(s, a) for s, a in found if s >= floor]

    async def remove(self, owner: ObjectId, doomed: Callable[[ObjectId, ObjectId], bool]) -> int:
        ids = [s for s, a in await self.items(owner) if doomed(s, a)]
        if not ids:
            return 0
        async with fenced():
            await self.coll.update_one({"_id": owner}, {"$pull": {"items": {"s": {"$in": ids}}}})
        return len(ids)

    async def remove_author(self, owner: ObjectId, author_id: ObjectId) -> int:
        async with fenced():
            result = await self.coll.update_one(
                {"_id": owner}, {"$pull": {"items": {"a": author_id}}}
            )
        return result.modified_count

    async def holders(self, status_id: ObjectId) -> set[ObjectId]:
        return {d["_id"] async for d in self.coll.find({"items.s": status_id}, {"_id": 1})}

    async def remove_status(self, status_id: ObjectId, holders: list[ObjectId]) -> None:
        async with fenced():
            await self.coll.update_many(
                {"items.s": status_id}, {"$pull": {"items": {"s": status_id}}}
            )

    async def trim(self, owner: ObjectId) -> int | None:
        if len(await self._entries(owner)) <= self.max_items:
            return None
        await self.mark_trimmed(owner)
        entries = await self._entries(owner)
        if len(entries) <= self.max_items:
            return None
        cut = entries[self.max_items]["s"]
        async with fenced():
            await self.coll.update_one({"_id": owner}, {"$pull": {"items": {"s": {"$lte": cut}}}})
        return len(await self._entries(owner))

    async def mark_trimmed(self, owner: ObjectId) -> None:
        async with fenced():
            await self.coll.update_one({"_id": owner}, {"$set": {"trimmed": True}}, upsert=True)

    async def is_trimmed(self, owner: ObjectId) -> bool:
        return await self.coll.find_one({"_id": owner, "trimmed": True}) is not None

    async def mark_owed(self, owners: list[ObjectId], status_id: ObjectId) -> None:
        async with fenced():
            await self.coll.update_many(
                {"_id": {"$in": owners}, "trimmed": True}, {"$addToSet": {"owed": status_id}}
            )

    async def owed(self, owners: list[ObjectId], status_id: ObjectId) -> list[ObjectId]:
        cursor = self.coll.find({"_id": {"$in": owners}, "owed": status_id}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    async def paid(self, owner: ObjectId, status_id: ObjectId) -> None:
        async with fenced():
            await self.coll.update_one({"_id": owner}, {"$pull": {"owed": status_id}})


class OneDocumentStrategy:
    name = NAME
    reads_truth = False

    def __init__(self, collab: Collaborators, layout: OneDocument) -> None:
        self.max_items = collab.max_items
        self.layout = layout
        self.timelines = MaterializedTimelines(layout, collab)

    async def ensure_indexes(self) -> None:
        await self.layout.coll.create_index("items.s")  # holders of a status

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        await self.layout.coll.update_one(
            {"_id": status["author_id"]},
            {"$addToSet": {"items": _entry(status)}},
            upsert=True,
            session=session,
        )

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        await self.layout.coll.update_one(
            {"_id": status["author_id"]},
            {"$pull": {"items": {"s": status["_id"]}}},
            session=session,
        )

    async def after_post(self, status: dict[str, Any]) -> None:
        """Written in the transaction."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """Removed in the transaction."""

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self.timelines.apply_posted(author_id, status_id)

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self.timelines.apply_deleted(author_id, status_id)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        await self.timelines.apply_friendship(author_id, other_id)

    async def rebuild(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

    async def rebuild_author(self, user_id: ObjectId) -> int:
        return 0

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

    async def _window(self, user_id: ObjectId) -> list[dict[str, Any]]:
        return (await self.layout._entries(user_id))[: self.max_items]

    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        window = await self._window(user_id)
        if after is not None:
            newer = [i for i in window if i["s"] > after]  # the newest `limit` of them
            gap = len(newer) > limit
            return Page([_view(i) for i in newer[:limit]], has_older=gap, gap=gap)
        older = [i for i in window if before is None or i["s"] < before]
        return Page([_view(i) for i in older[:limit]], has_older=len(older) > limit, gap=False)

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        return sum(1 for i in await self._window(user_id) if after is None or i["s"] > after)

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        return PageQuery(self.layout.coll, {"_id": user_id}, [("_id", 1)], 1, {"items": 1})

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return [i["s"] for i in await self._window(user_id)]


def _view(item: dict[str, Any]) -> StatusView:
    return StatusView(item["s"], item["n"], item["t"], item["c"])


SPEC = StrategySpec(
    NAME,
    lambda c, s: OneDocumentStrategy(c, OneDocument(c.collection(COLLECTION), c.max_items)),
    collections=(COLLECTION,),
    built_probe=(COLLECTION, {}),
)


def register_toy() -> None:
    register(SPEC)
