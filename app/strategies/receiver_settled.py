"""receiver_copies' check that a refill pass is settled (see ReceiverCopies.rebuild)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.graph import Graph
from app.queued import QueueReader
from app.store import Collection, Store
from app.strategies.common import truth_timeline, window_misses_none

# Event states whose change may still be on its way into timelines (a dead event's too, until
# it is retried): their statuses are not required in a refilled window yet.
NOT_DONE_STATES = ["staged", "pending", "dead"]


async def settled(
    graph: Graph, store: Store, entries: Collection, user_id: ObjectId, max_items: int
) -> bool:
    """Whether `user_id`'s entries (in `entries`, the strategy's collection) agree with the
    truth read now, over what a refill owns.

    A status whose fan-out has not finished is its fan-out's to deliver, and a newer one
    that pushes an older status out of the window is the trim's business: neither makes a
    refill wrong. Comparing the whole first page instead made a refill fail for as long as
    friends kept posting (each pass saw a status its fan-out had not delivered yet), so
    that a delete's refills never finished. What is checked:
    - every entry from the bottom of the true window up is a true status (its author may
      be seen, it exists), so nothing wrong is shown;
    - every status of the true window is there, or its fan-out is unfinished, or at least
      TIMELINE_MAX (true) entries are newer, so nothing right is missing once fan-outs end.
    The unfinished fan-outs are read after the truth and before the entries: a fan-out
    finished by then has put its copy in place before the entries are read."""
    friends = await graph.friend_ids(user_id)
    allowed = {user_id, *friends}
    truth = await truth_timeline(store.statuses, user_id, friends, max_items)
    truth_ids = {s["_id"] for s in truth}
    # Status ids are tested here, not in the query: a second `$in` multiplies its cost on
    # the embedded server (Queue.unfinished_posts).
    unfinished = {
        e["status_id"]
        for e in await QueueReader(store.events).unfinished_posts(
            list({s["author_id"] for s in truth}), NOT_DONE_STATES
        )
        if e.get("status_id") in truth_ids
    }
    flt: dict[str, Any] = {"owner_id": user_id}
    if len(truth) >= max_items:
        flt["status_id"] = {"$gte": truth[-1]["_id"]}
    cursor = entries.find(flt, {"status_id": 1, "author_id": 1})
    shown = await cursor.sort("status_id", -1).to_list()
    extra = [d for d in shown if d["status_id"] not in truth_ids]
    if any(d["author_id"] not in allowed for d in extra):
        return False
    if extra:
        extra_ids = [d["status_id"] for d in extra]
        existing = await store.statuses.count_documents(
            {
                "author_id": {"$in": list({d["author_id"] for d in extra})},
                "_id": {"$in": extra_ids},
            }
        )
        if existing != len(extra_ids):
            return False
    shown_ids = [d["status_id"] for d in shown]  # newest first
    return window_misses_none(shown_ids, truth, unfinished, max_items)
