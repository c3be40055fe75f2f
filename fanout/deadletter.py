"""Dead-lettered events: listing them and putting them back in the queue (`timeline events`)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.models import Event

# `timeline events list` shows at most this many, oldest first: enough to see what is wrong
# without flooding a terminal when a bug parks thousands.
LIST_LIMIT = 100


async def list_events(state: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    cursor = Event.get_pymongo_collection().find({"state": state}).sort("_id", 1).limit(limit)
    return await cursor.to_list()


async def count(state: str) -> int:
    return await Event.get_pymongo_collection().count_documents({"state": state})


async def retry(ids: list[ObjectId] | None) -> int:
    """Re-queue dead events (all of them when `ids` is None) with a fresh attempt budget.
    `last_error` is kept for the record until the event succeeds or fails again."""
    flt: dict[str, Any] = {"state": "dead"}
    if ids is not None:
        flt["_id"] = {"$in": ids}
    result = await Event.get_pymongo_collection().update_many(
        flt,
        {
            "$set": {"state": "pending", "attempts": 0, "lease_until": None, "lease_owner": None},
            "$unset": {"resume_after": ""},
        },
    )
    return result.modified_count
