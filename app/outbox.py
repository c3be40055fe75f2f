"""Recording events in the same write path as the change they describe.

With transactions (replica sets, sharded clusters, the embedded server) events are inserted
`pending` inside the change's transaction: both commit or neither does.

Without transactions (a standalone mongod) `staged()` inserts them as `staged` *before* the
change and flips them to `pending` after it. A crash in between leaves a staged event that the
worker picks up once it is older than STAGED_GRACE_S; since every handler reconciles to the
current state, applying an event whose change never happened is harmless. No order of crashes
loses an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from bson import ObjectId

from app.db import Database, Session
from app.models import Event, utcnow

T = TypeVar("T")

# A staged event older than this is treated as pending: its writer crashed or is very slow.
STAGED_GRACE_S = 30


def status_event(kind: str, author_id: ObjectId, status_id: ObjectId) -> dict[str, Any]:
    return {"kind": kind, "author_id": author_id, "status_id": status_id}


def friendship_events(a: ObjectId, b: ObjectId) -> list[dict[str, Any]]:
    """A friendship change is two author-keyed events: A's statuses towards B, and B's towards A."""
    return [
        {"kind": "friendship_changed", "author_id": a, "other_id": b},
        {"kind": "friendship_changed", "author_id": b, "other_id": a},
    ]


def _docs(events: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {"state": state, "attempts": 0, "lease_until": None, "created_at": now, **e} for e in events
    ]


async def record(events: list[dict[str, Any]], *, session: Session) -> None:
    """Insert events as pending within `session`'s transaction."""
    await Event.get_pymongo_collection().insert_many(_docs(events, "pending"), session=session)


@asynccontextmanager
async def staged(events: list[dict[str, Any]]) -> AsyncIterator[None]:
    """The no-transaction path: staged before the change, pending after it."""
    coll = Event.get_pymongo_collection()
    result = await coll.insert_many(_docs(events, "staged"))
    yield
    await coll.update_many(
        {"_id": {"$in": result.inserted_ids}, "state": "staged"}, {"$set": {"state": "pending"}}
    )


async def pending_count() -> int:
    return await Event.get_pymongo_collection().count_documents(
        {"state": {"$in": ["pending", "staged"]}}
    )


async def commit_with_events(
    database: Database,
    events: list[dict[str, Any]],
    change: Callable[[Session], Awaitable[T]],
) -> T:
    """Apply `change` and record `events` so that neither can be lost without the other."""
    if not events:
        return await database.in_transaction(change)
    if database.supports_transactions:

        async def both(session: Session) -> T:
            result = await change(session)
            await record(events, session=session)
            return result

        return await database.in_transaction(both)
    async with staged(events):
        return await change(None)
