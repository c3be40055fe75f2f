"""inbox_buckets' rebuild: make an owner's chain exactly the truth, safely against concurrent
handlers. The same passes as receiver_copies.rebuild (reconcile, then check against a fresh look
at the truth, repeated while concurrent changes make a pass act on a stale view), over the
chain's entries instead of per-entry documents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bson import ObjectId

from app.queued import QueueReader
from app.strategies.base import Contention
from app.strategies.common import truth_timeline, window_misses_none
from app.strategies.inbox_chain import Chain, entry

if TYPE_CHECKING:
    from app.strategies.inbox_buckets import InboxBuckets

# As receiver_copies.REBUILD_PASSES: a pass is repeated only when a concurrent change to this
# owner's timeline made it act on a stale view; past this many the event is retried later.
REBUILD_PASSES = 8
# Event states whose change may still be on its way into timelines (receiver_copies).
NOT_DONE_STATES = ["staged", "pending", "dead"]
# Status ids per existence look-up: the embedded server's `$in` cost grows with the square of
# the list (app/strategies/common.py).
IDS_PER_QUERY = 100


class Unsettled(Contention):
    """A rebuild kept racing concurrent changes; the worker retries the event later."""


async def rebuild_owner(strategy: InboxBuckets, user_id: ObjectId) -> int:
    changed = 0
    for _ in range(REBUILD_PASSES):
        changed += await _reconcile(strategy, user_id)
        if await _settled(strategy, user_id):
            return changed
    raise Unsettled(f"timeline of {user_id} kept changing during {REBUILD_PASSES} passes")


async def _existing(strategy: InboxBuckets, ids: list[ObjectId]) -> set[ObjectId]:
    found: set[ObjectId] = set()
    for start in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[start : start + IDS_PER_QUERY]
        cursor = strategy.store.statuses.find({"_id": {"$in": chunk}}, {"_id": 1})
        found.update([d["_id"] async for d in cursor])
    return found


async def _reconcile(strategy: InboxBuckets, user_id: ObjectId) -> int:
    """One pass: place the truth, then remove what has a reason to go (an author who is no
    longer a friend, a status that is gone, anything below the TIMELINE_MAX window)."""
    inbox, cap = strategy.inbox, strategy.max_items
    friends = await strategy.graph.friend_ids(user_id)
    truth = await truth_timeline(strategy.store.statuses, user_id, friends, cap)
    if len(truth) >= cap:
        await inbox.mark_trimmed(user_id)  # before the cut, as receiver_copies
    changed = await inbox.place(user_id, [entry(s) for s in truth])
    # Re-read the graph after writing: an unfriend or delete that raced with the placement
    # above either saw it (and removed it) or is seen here.
    allowed = {user_id, *await strategy.graph.friend_ids(user_id)}
    stored = (await inbox.chain(user_id)).ids()
    gone = set(stored) - await _existing(strategy, stored)
    floor = truth[-1]["_id"] if len(truth) >= cap else None

    def doomed(chain: Chain) -> set[ObjectId]:
        return {
            i["s"]
            for b in chain.buckets
            for i in b["items"]
            if i["a"] not in allowed or i["s"] in gone or (floor is not None and i["s"] < floor)
        }

    changed += await inbox.remove(user_id, doomed)
    await inbox.trim(user_id)
    return changed


async def _settled(strategy: InboxBuckets, user_id: ObjectId) -> bool:
    """Whether `user_id`'s chain agrees with the truth read now, over what a refill owns (see
    receiver_copies._settled: unfinished fan-outs and the trim's business do not count)."""
    cap = strategy.max_items
    friends = await strategy.graph.friend_ids(user_id)
    allowed = {user_id, *friends}
    truth = await truth_timeline(strategy.store.statuses, user_id, friends, cap)
    truth_ids = {s["_id"] for s in truth}
    unfinished = {
        e["status_id"]
        for e in await QueueReader(strategy.store.events).unfinished_posts(
            list({s["author_id"] for s in truth}), NOT_DONE_STATES
        )
        if e.get("status_id") in truth_ids
    }
    chain = await strategy.inbox.chain(user_id)
    shown = [i for b in chain.buckets for i in b["items"]]
    if len(truth) >= cap:
        shown = [i for i in shown if i["s"] >= truth[-1]["_id"]]
    extra = [i for i in shown if i["s"] not in truth_ids]
    if any(i["a"] not in allowed for i in extra):
        return False
    if extra and len(await _existing(strategy, [i["s"] for i in extra])) != len(extra):
        return False
    return window_misses_none([i["s"] for i in shown], truth, unfinished, cap)
