"""The queue's typed event and the rules that decide from an event document alone whether it is
waiting or claimable (app.queue moves events; this module only reads them)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from bson import ObjectId

from app.models import EventKind, EventState

# A staged event younger than this is left to its writer, which promotes it within
# milliseconds; only then does the worker check it against the source of truth. A hint for
# when to look, not a proof of anything: a skewed clock only makes the worker look earlier.
STAGED_GRACE_S = 30

# Not yet applied. The claim queries select on indexed fields only, `state` (and `author_id`),
# and test the rest of a claim's conditions in Python: the embedded server's planner uses an
# index only when every field of the filter is in it, and otherwise scans the whole collection,
# done events included (they stay for DONE_EVENT_TTL_SECONDS), whatever the filter. Hints do not
# help there (measured: a hinted look at one author's events took 40 ms, this one 3 ms, with
# 600 waiting events; the unhinted `$or` filter scanned all 3,100 documents of a collection
# holding 100 waiting events). On mongod the same queries are plain index scans.
NOT_DONE: dict[str, Any] = {"state": {"$in": ["pending", "staged"]}}


class QueuedEvent(TypedDict):
    """An event document as the queue hands it out (app.models.Event has the field meanings)."""

    _id: ObjectId
    kind: EventKind
    author_id: ObjectId
    state: EventState
    attempts: int
    lease_until: datetime | None
    created_at: datetime
    status_id: NotRequired[ObjectId | None]
    other_id: NotRequired[ObjectId | None]
    # A friendship change's outcome: whether its staged event's change landed (app.outbox).
    friends: NotRequired[bool]
    lease_owner: NotRequired[str | None]
    started_at: NotRequired[datetime | None]
    resume_after: NotRequired[ObjectId | None]
    # How often a staged event was found not landed yet (`Queue.defer`).
    checks: NotRequired[int]


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
    """A staged event worth checking against the source of truth (app.outbox): past the grace
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
