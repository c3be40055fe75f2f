"""Queries over the source of truth that several strategies share."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.models import Status


async def window_floor(author_id: ObjectId, max_items: int) -> ObjectId | None:
    """The id of the author's `max_items`-th newest status, or None if there are fewer.

    Statuses older than this can be in nobody's timeline: every reader who may see the author
    already has `max_items` newer statuses of theirs. That is what bounds backfills."""
    cursor = (
        Status.get_pymongo_collection()
        .find({"author_id": author_id}, {"_id": 1})
        .sort("_id", -1)
        .skip(max_items - 1)
        .limit(1)
    )
    docs = await cursor.to_list()
    return docs[0]["_id"] if docs else None


async def newest_statuses(author_id: ObjectId, limit: int) -> list[dict[str, Any]]:
    cursor = (
        Status.get_pymongo_collection()
        .find({"author_id": author_id}, {"audience": 0})
        .sort("_id", -1)
        .limit(limit)
    )
    return await cursor.to_list()


async def truth_timeline(
    user_id: ObjectId, friends: list[ObjectId], max_items: int
) -> list[dict[str, Any]]:
    """The ground truth: the fan-out-on-read answer for `user_id`, newest first."""
    cursor = (
        Status.get_pymongo_collection()
        .find({"author_id": {"$in": [user_id, *friends]}}, {"audience": 0})
        .sort("_id", -1)
        .limit(max_items)
    )
    return await cursor.to_list()
