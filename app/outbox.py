"""Recording events in the same write path as the change they describe.

With transactions (replica sets, sharded clusters, the embedded server) events are inserted
`pending` inside the change's transaction: both commit or neither does.

Without transactions (a standalone mongod) `_staged` inserts them as `staged` *before* the
change, so that no crash can lose them, and a staged event is never applied before its change
has landed:
- the writer promotes its events to `pending` once its change is done. A change that fails
  before writing anything raises `NothingWritten` (a 404 accept, a friend limit) and its events
  are deleted. Any other failure with a definite outcome settles each event against the source
  of truth (`landed`): promoted if its change landed (a status inserted before a later step
  failed is published, and the retry of its Idempotency-Key returns it), deleted if not. A
  failure whose outcome is unknown (an outage, a timeout, a cancelled request: the server may
  still run the write) leaves them staged;
- the worker looks at a staged event left behind once it is STAGED_GRACE_S old and asks the
  source of truth whether its change landed (`landed`): then it applies it; if not, it leaves
  it staged and looks again STAGED_RECHECK_S later (`defer`), and after STAGED_CHECKS looks it
  drops the event unapplied (the writer is presumed dead);
- a writer whose change lands after the worker took or dropped its event (a writer slower than
  the grace, or a clock skewed) finds the event no longer staged when it promotes, and records
  it again as `pending`: an application always follows the change.
Clocks only decide *when* the worker looks at a staged event, never whether it applies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.errors import PyMongoError

from app import graph
from app.db import Database, Session, domain_error_from_pymongo
from app.models import Event, Status, utcnow

T = TypeVar("T")

log = logging.getLogger("timeline.outbox")

# A staged event younger than this is left to its writer, which promotes it within
# milliseconds; only then does the worker check it against the source of truth. A hint for
# when to look, not a proof of anything: a skewed clock only makes the worker look earlier.
STAGED_GRACE_S = 30
# A staged event whose change has not landed is looked at again this long after each look
# (by the worker's clock).
STAGED_RECHECK_S = 30
# After this many looks (about STAGED_GRACE_S + STAGED_CHECKS * STAGED_RECHECK_S = 5.5
# minutes, far longer than any request: every database operation is bounded by
# app.db.OPERATION_TIMEOUT_MS) the change is presumed never to land and its event is dropped
# unapplied. If the change lands after all, its writer records the event again (`_promote`).
STAGED_CHECKS = 10


class NothingWritten(Exception):
    """Raised by a change that gives up before writing anything: its events are discarded.
    Subclass it for the caller to tell why."""


def status_event(kind: str, author_id: ObjectId, status_id: ObjectId) -> dict[str, Any]:
    return {"kind": kind, "author_id": author_id, "status_id": status_id}


def friendship_events(a: ObjectId, b: ObjectId, *, friends: bool) -> list[dict[str, Any]]:
    """A friendship change is two author-keyed events: A's statuses towards B, and B's towards A.
    `friends` is the change's outcome, which says whether a staged event's change landed."""
    return [
        {"kind": "friendship_changed", "author_id": a, "other_id": b, "friends": friends},
        {"kind": "friendship_changed", "author_id": b, "other_id": a, "friends": friends},
    ]


def _docs(events: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {"state": state, "attempts": 0, "lease_until": None, "created_at": now, **e} for e in events
    ]


async def record(events: list[dict[str, Any]], *, session: Session) -> None:
    """Insert events as pending within `session`'s transaction."""
    await Event.get_pymongo_collection().insert_many(_docs(events, "pending"), session=session)


async def landed(event: dict[str, Any]) -> bool:
    """Whether the change of a staged event is in the source of truth (durable: acknowledged)."""
    kind = event["kind"]
    if kind in ("status_posted", "status_deleted"):
        found = await Status.get_pymongo_collection().find_one(
            {"author_id": event["author_id"], "_id": event["status_id"]}, {"_id": 1}
        )
        return bool((found is not None) == (kind == "status_posted"))
    if kind == "friendship_changed" and event.get("friends") is not None:
        friends = await graph.are_friends(event["author_id"], event["other_id"])
        return bool(friends == event["friends"])
    return True  # recorded without an outcome to check: applied (handlers reconcile)


async def defer(event: dict[str, Any], now: datetime) -> None:
    """The worker found `event`'s change not landed: look again later, or drop it unapplied."""
    coll = Event.get_pymongo_collection()
    checks = event.get("checks", 0) + 1
    if checks >= STAGED_CHECKS:
        dropped = await coll.delete_one({"_id": event["_id"], "state": "staged"})
        if dropped.deleted_count:
            log.warning(
                "dropped staged event %s (%s): its change never landed", event["_id"], event["kind"]
            )
        return
    await coll.update_one(
        {"_id": event["_id"], "state": "staged"},
        {"$set": {"checks": checks, "lease_until": now + timedelta(seconds=STAGED_RECHECK_S)}},
    )


async def _promote(docs: list[dict[str, Any]]) -> None:
    """Staged → pending. An event no longer staged was applied by the worker (perhaps before
    this change was complete) or dropped: record it again, so that one is applied after it."""
    coll = Event.get_pymongo_collection()
    for doc in docs:
        flipped = await coll.update_one(
            {"_id": doc["_id"], "state": "staged"},
            {"$set": {"state": "pending", "lease_until": None}},
        )
        if flipped.matched_count == 0:
            again = {k: v for k, v in doc.items() if k not in ("_id", "state")}
            await coll.insert_one({**again, "state": "pending", "created_at": utcnow()})


async def _settle(docs: list[dict[str, Any]]) -> None:
    """After a change failed with a definite outcome: promote what landed, delete the rest."""
    coll = Event.get_pymongo_collection()
    for doc in docs:
        if await landed(doc):
            await _promote([doc])
        else:
            await coll.delete_one({"_id": doc["_id"], "state": "staged"})


def _outcome_unknown(exc: BaseException) -> bool:
    """A write may still land after this error: the server may be running it."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, PyMongoError) and domain_error_from_pymongo(exc) is not None


async def _staged(events: list[dict[str, Any]], change: Callable[[Session], Awaitable[T]]) -> T:
    """The no-transaction path: staged before the change, pending after it (module docstring)."""
    coll = Event.get_pymongo_collection()
    docs = _docs(events, "staged")
    await coll.insert_many(docs)  # sets each doc's _id
    try:
        result = await change(None)
    except NothingWritten:
        try:
            await coll.delete_many({"_id": {"$in": [d["_id"] for d in docs]}, "state": "staged"})
        except PyMongoError:
            pass  # left staged: the worker finds that the change never landed, and drops it
        raise
    except BaseException as exc:
        if not _outcome_unknown(exc):
            try:
                await _settle(docs)
            except PyMongoError:
                pass  # left staged: the worker settles them the same way
        raise
    await _promote(docs)
    return result


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
    return await _staged(events, change)
