"""The queue's typed event, the rules that decide from an event document alone whether it is
waiting or claimable, and the queue's read-only views (`QueueReader`, for /health, the
operator's `timeline events`, a refill's look at unfinished fan-outs). app.pipeline.queue moves
events;
this module only reads them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from bson import ObjectId

from app.storage.models import EventKind, EventState, utcnow
from app.storage.store import Collection

# A staged event younger than this is left to its writer, which promotes it within
# milliseconds; only then does the worker check it against the source of truth. A hint for
# when to look, not a proof of anything: a skewed clock only makes the worker look earlier.
STAGED_GRACE_S = 30
# `timeline events list` shows at most this many, oldest first: enough to see what is wrong
# without flooding a terminal when a bug parks thousands.
LIST_LIMIT = 100
# /health and the metrics name this many authors with the most events waiting: enough to see
# who one heavy poster is, bounded so that neither the answer nor the metric's series grow with
# the number of authors.
BACKLOG_TOP_AUTHORS = 5

# Not yet applied. The claim queries select on indexed fields only, `state` (and `author_id`),
# and test the rest of a claim's conditions in Python: the embedded server's planner uses an
# index only when every field of the filter is in it, and otherwise scans the whole collection,
# done events included (they stay for DONE_EVENT_TTL_SECONDS), whatever the filter. Hints do not
# help there (measured: a hinted look at one author's events took 40 ms, this one 3 ms, with
# 600 waiting events; the unhinted `$or` filter scanned all 3,100 documents of a collection
# holding 100 waiting events). On mongod the same queries are plain index scans.
NOT_DONE: dict[str, Any] = {"state": {"$in": ["pending", "staged"]}}


class QueuedEvent(TypedDict):
    """An event document as the queue hands it out (app.storage.models.Event has the field
    meanings)."""

    _id: ObjectId
    kind: EventKind
    author_id: ObjectId
    state: EventState
    attempts: int
    lease_until: datetime | None
    created_at: datetime
    status_id: NotRequired[ObjectId | None]
    other_id: NotRequired[ObjectId | None]
    # A friendship change's outcome: whether its staged event's change landed (app.pipeline.outbox).
    friends: NotRequired[bool]
    lease_owner: NotRequired[str | None]
    started_at: NotRequired[datetime | None]
    resume_after: NotRequired[dict[str, ObjectId] | None]
    # How often a staged event was found not landed yet (`Queue.defer`).
    checks: NotRequired[int]
    # The stamp of the revocation record this event settles (app.domain.revocations).
    revokes: NotRequired[ObjectId | None]


def from_doc(doc: Mapping[str, Any]) -> QueuedEvent:
    """The typed view of a stored event document (the boundary: the database wrote it)."""
    return cast(QueuedEvent, dict(doc))


def new_docs(
    events: list[dict[str, Any]], state: EventState, now: datetime
) -> list[dict[str, Any]]:
    return [
        {"state": state, "attempts": 0, "lease_until": None, "created_at": now, **e} for e in events
    ]


def staged_due(event: Mapping[str, Any], now: datetime) -> bool:
    """A staged event worth checking against the source of truth (app.pipeline.outbox): past the
    grace
    (a young one is a write in flight) and not waiting for its next look."""
    grace = now - timedelta(seconds=STAGED_GRACE_S)
    until = event.get("lease_until")
    return bool(
        event["state"] == "staged"
        and event["created_at"] < grace
        and (until is None or until < now)
    )


def is_waiting(event: Mapping[str, Any], now: datetime) -> bool:
    """Not yet applied (a young staged event is not: its write is in flight)."""
    return event["state"] == "pending" or staged_due(event, now)


def is_claimable(event: Mapping[str, Any], now: datetime) -> bool:
    """Waiting, and not leased to a worker or backing off after a failure."""
    if event["state"] == "pending":
        until = event.get("lease_until")
        return until is None or until < now
    return staged_due(event, now)


class QueueReader:
    """Counts and lists over one store's `events` collection."""

    def __init__(self, events: Collection) -> None:
        self.events = events

    async def list_events(self, state: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        cursor = self.events.find({"state": state}).sort("_id", 1).limit(limit)
        return cast(list[dict[str, Any]], await cursor.to_list())

    async def count(self, state: str) -> int:
        return int(await self.events.count_documents({"state": state}))

    async def pending_count(self) -> int:
        """Events not yet applied."""
        return int(await self.events.count_documents(NOT_DONE))

    async def any_waiting_before(self, cutoff: ObjectId) -> bool:
        """Whether an event recorded before `cutoff` is not yet applied."""
        older = {"_id": {"$lt": cutoff}, **NOT_DONE}
        return await self.events.find_one(older, {"_id": 1}) is not None

    async def backlog(self) -> dict[str, object]:
        """The worker's backlog as GET /health reports it."""
        pending = await self.pending_count()
        oldest = await self.events.find_one(NOT_DONE, {"created_at": 1}, sort=[("_id", 1)])
        age = (utcnow() - oldest["created_at"]).total_seconds() if oldest else None
        return {
            "pending_events": pending,
            "oldest_pending_age_s": round(age, 3) if age is not None else None,
            "dead_events": await self.count("dead"),
        }

    async def top_backlogs(self, n: int = BACKLOG_TOP_AUTHORS) -> list[tuple[ObjectId, int]]:
        """The `n` authors with the most events not yet applied, most first: (author, count)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": NOT_DONE},
            {"$group": {"_id": "$author_id", "n": {"$sum": 1}}},
            {"$sort": {"n": -1, "_id": 1}},
            {"$limit": n},
        ]
        cursor = await self.events.aggregate(pipeline)
        return [(d["_id"], int(d["n"])) async for d in cursor]

    async def unfinished_posts(
        self, authors: list[ObjectId], states: list[str]
    ) -> list[dict[str, Any]]:
        """The `status_posted` events (with `status_id`) of `authors` in `states`. Selected on the
        (author_id, state) index's fields alone, the kind tested here: the embedded server scans the
        whole collection (done events included) for a filter with any other field."""
        cursor = self.events.find(
            {"author_id": {"$in": authors}, "state": {"$in": states}}, {"status_id": 1, "kind": 1}
        )
        return [e async for e in cursor if e["kind"] == "status_posted"]
