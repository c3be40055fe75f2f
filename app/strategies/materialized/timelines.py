"""Materialized timelines, written once: the checkpointed fan-out in batches, backfills and
unfriends, removals with their owed refills, trims, and rebuilds with the settled check, over any
storage layout (layout.py). receiver_copies, inbox_buckets and hybrid's fanned-out side are this
component over their layout.

The protocol in short (docs/design.md, "Materialized timelines"):
- a post reaches the author and their current friends in FANOUT_BATCH batches, in receiver id
  order, saving the last receiver done after each batch but the last (app.pipeline.checkpoint): a
  fan-out resumed after a crash redoes at most one batch, which adds nothing twice;
- a timeline that was ever cut at TIMELINE_MAX is marked *trimmed* before the cut is looked at,
  and a removal from a trimmed timeline refills it from the truth (a delete records whom it owes
  that refill before the items go);
- a rebuild repeats reconcile-then-check passes until a fresh look at the truth agrees with
  what is stored, over what a refill owns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from app.pipeline import checkpoint
from app.storage.chunks import chunked
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Contention
from app.strategies.materialized.layout import Item, Layout
from app.strategies.truth import newest_statuses, truth_timeline, window_misses_none

# Receivers per batch of a fan-out. 1,000 keeps each bulk write well under the 16 MB message
# limit (an entry is ~250 B plus text of up to 5,000 chars) and lets a resumed fan-out redo at
# most one batch, while amortizing the round trip (drivers split bigger batches anyway).
FANOUT_BATCH = 1000
# A rebuild pass is repeated only when a concurrent change to this owner's timeline made it act
# on a stale view (a re-friendship's backfill, another refill of the same owner); new posts and
# their fan-outs do not count (see `settled`). Each repeat needs yet another such change during
# the previous pass. Past this many, the event is retried a little later as contention
# (fanout/worker.py), which does not count towards parking it as dead.
REBUILD_PASSES = 8
# Event states whose change may still be on its way into timelines (a dead event's too, until
# it is retried): their statuses are not required in a refilled window yet.
NOT_DONE_STATES = ["staged", "pending", "dead"]
# Status ids per existence look-up (app.storage.chunks: bounded `$in` lists).
IDS_PER_QUERY = 100

FriendsOf = Callable[[ObjectId], Awaitable[list[ObjectId]]]


class Unsettled(Contention):
    """A rebuild kept racing concurrent changes; the worker retries the event later."""


class MaterializedTimelines:
    """Readers' materialized timelines stored by `layout`.

    `friends_of(owner)` names the friends whose statuses an owner's timeline holds: all of them
    (the default), but in hybrid, which merges its large-audience authors in at read time."""

    def __init__(
        self, layout: Layout, collab: Collaborators, *, friends_of: FriendsOf | None = None
    ) -> None:
        self.layout = layout
        self.statuses = collab.statuses
        self.graph = collab.graph
        self.activity = collab.activity
        self.pending = collab.pending
        self.max_items = collab.max_items
        self.friends_of = friends_of or collab.graph.friend_ids

    # -- posting -------------------------------------------------------------------------------
    async def active(self, receivers: list[ObjectId], author_id: ObjectId) -> list[ObjectId]:
        """Those of `receivers` who read within TIMELINE_ACTIVE_DAYS (app.domain.activity); the
        author
        always (their own copy is written with the post anyway). A user skipped here gets the
        status from the rebuild that follows their return: it starts after the return is
        marked, so after this look, and the status was in `statuses` before (docs/design.md)."""
        if self.activity is None:
            return receivers
        away = await self.activity.inactive_among(receivers)
        return [r for r in receivers if r == author_id or r not in away]

    async def fan_out(self, status: dict[str, Any], receivers: list[ObjectId]) -> int:
        """Deliver `status` to `receivers` in FANOUT_BATCH batches, checkpointed (see the module
        docstring); returns how many timelines it was new to."""
        cp = checkpoint.current.get()
        order = sorted(set(receivers))
        if cp is not None and cp.resume_after is not None:
            order = [r for r in order if r > cp.resume_after]
        batches = list(chunked(order, FANOUT_BATCH))
        delivered = 0
        for n, batch in enumerate(batches, 1):
            active = await self.active(batch, status["author_id"])
            new, over = await self.layout.deliver(active, status) if active else (0, [])
            delivered += new
            for owner in over:
                await self.trim(owner)
            # No save after the last batch: the event is marked done next (by its lease owner
            # only), so that save would fence nothing and cost two writes per post, most of a
            # small fan-out's bookkeeping.
            if cp is not None and n < len(batches):
                await cp.save(batch[-1])
        return delivered

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        status = await self.statuses.find_one(
            {"author_id": author_id, "_id": status_id}, {"audience": 0}
        )
        if status is None:
            return  # deleted meanwhile: its delete event removes whatever copies exist
        await self.fan_out(status, [author_id, *await self.graph.friend_ids(author_id)])

    # -- removals ------------------------------------------------------------------------------
    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Every copy goes first, whatever then happens to the refills (a deleted status must
        leave every timeline even if a refill keeps failing). Trimmed timelines that held a
        copy are then refilled from the truth: they may now miss an older status. The author's
        own copy may have gone synchronously, so the author counts as a holder.

        Whom a refill is owed is recorded before the copies go and cleared after each refill,
        so a retry after a crash or a failed refill still refills every one of them although no
        copy is left to find."""
        holders = sorted({author_id, *await self.layout.holders(status_id)})
        await self.layout.mark_owed(holders, status_id)
        await self.layout.remove_status(status_id, holders)
        # Holders first trimmed between the mark and the removal (by another author's fan-out)
        # lost the copy after their trim. A crash right before this second mark leaves those
        # unrefilled: it needs that concurrent first trim too (`timeline check` reports it).
        await self.layout.mark_owed(holders, status_id)
        # A refill is owed only to the author and current friends (an ex-friend's timeline is
        # refilled by the author's unfriend event, applied in order with this one).
        owners = sorted({author_id, *await self.graph.friend_ids(author_id)})
        for owner in await self.layout.owed(owners, status_id):
            await self.rebuild(owner)
            await self.layout.paid(owner, status_id)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        """Backfill the author's window into `other_id`'s timeline, or remove all of it."""
        if await self.graph.are_friends(author_id, other_id):
            statuses = await self._befriend_window(author_id, other_id)
            if statuses and await self.layout.place(other_id, statuses):
                await self.trim(other_id)
            return
        await self.layout.remove_author(other_id, author_id)
        # Even when nothing went: a retry after a crash between the removal and the refill
        # finds nothing to remove, yet still owes the refill.
        if await self.layout.is_trimmed(other_id):
            await self.rebuild(other_id)

    async def _befriend_window(
        self, author_id: ObjectId, reader_id: ObjectId
    ) -> list[dict[str, Any]] | None:
        """What a new friendship copies into `reader_id`'s timeline: the author's TIMELINE_MAX
        newest statuses, or None when the reader is away (their return rebuilds from the truth,
        friends included). The backfill stops there, so when the author has that many the
        reader misses older ones exactly as if trimmed: the reader is marked trimmed before the
        caller writes, so a concurrent removal already sees it."""
        if not await self.active([reader_id], author_id):
            return None
        statuses = await newest_statuses(self.statuses, author_id, self.max_items)
        if len(statuses) >= self.max_items:
            await self.layout.mark_trimmed(reader_id)
        return statuses

    async def trim(self, owner: ObjectId) -> None:
        """Cut the owner's timeline to TIMELINE_MAX. Another worker may be removing items of
        this owner at the same time (an unfriend or a delete by another author); a cut that
        counted them cuts items that belong in the window. So a cut that left fewer than
        TIMELINE_MAX items (a removal overlapped it) refills the owner. Three workers in
        tests/test_worker_multi.py lost entries this way before."""
        left = await self.layout.trim(owner)
        if left is not None and left < self.max_items:
            await self.rebuild(owner)

    # -- rebuilds ------------------------------------------------------------------------------
    async def rebuild(self, owner: ObjectId) -> int:
        """Make the owner's timeline exactly the truth, safely against concurrent handlers.

        Handlers of other authors (their posts, deletes, unfriends and re-friends) and other
        refills of this owner run at the same time; author leases only order one author's
        events. So a reconcile pass can act on a stale view: remove the items of an author who
        was re-befriended (and backfilled) meanwhile, or cut below a window that another
        author's unfriend has since shrunk. Every pass therefore ends with a fresh look at the
        truth (`settled`), and a pass that disagrees with it is repeated. Because the check
        follows this rebuild's own removals, the last rebuild to remove is also the last to
        check. Three worker processes lost entries before this
        (tests/test_concurrent_workers.py)."""
        changed = 0
        for _ in range(REBUILD_PASSES):
            changed += await self.reconcile(owner)
            if await self.settled(owner):
                return changed
        raise Unsettled(f"timeline of {owner} kept changing during {REBUILD_PASSES} passes")

    async def reconcile(self, owner: ObjectId) -> int:
        """One pass: place the truth, then remove what has a reason to go (an author who is no
        longer a friend, a status that is gone, anything below the TIMELINE_MAX window)."""
        cap = self.max_items
        truth = await truth_timeline(self.statuses, owner, await self.friends_of(owner), cap)
        if len(truth) >= cap:
            # Older statuses are about to be cut off: later removals must refill this
            # timeline. Marked before the cut, so a removal that checks afterwards sees it.
            await self.layout.mark_trimmed(owner)
        changed = await self.layout.place(owner, truth)
        # Re-read the graph after writing: an unfriend or delete that raced with the placement
        # above either saw it (and removed it) or is seen here.
        allowed = {owner, *await self.friends_of(owner)}
        stored = [s for s, _ in await self.layout.items(owner)]
        gone = set(stored) - await self._existing(stored)
        floor = truth[-1]["_id"] if len(truth) >= cap else None

        def doomed(status_id: ObjectId, author_id: ObjectId) -> bool:
            below = floor is not None and status_id < floor
            return author_id not in allowed or status_id in gone or below

        changed += await self.layout.remove(owner, doomed)
        await self.layout.trim(owner)
        return changed

    async def settled(self, owner: ObjectId) -> bool:
        """Whether the owner's timeline agrees with the truth read now, over what a refill owns.

        A status whose fan-out has not finished is its fan-out's to deliver, and a newer one
        that pushes an older status out of the window is the trim's business: neither makes a
        refill wrong. Comparing the whole first page instead made a refill fail for as long as
        friends kept posting (each pass saw a status its fan-out had not delivered yet), so
        that a delete's refills never finished. What is checked:
        - every item from the bottom of the true window up is a true status (its author may
          be seen, it exists), so nothing wrong is shown;
        - every status of the true window is there, or its fan-out is unfinished, or at least
          TIMELINE_MAX (true) items are newer, so nothing right is missing once fan-outs end.
        The unfinished fan-outs are read after the truth and before the items: a fan-out
        finished by then has put its copy in place before the items are read."""
        cap = self.max_items
        friends = await self.friends_of(owner)
        allowed = {owner, *friends}
        truth = await truth_timeline(self.statuses, owner, friends, cap)
        truth_ids = {s["_id"] for s in truth}
        # Status ids are tested here, not in the query: a second `$in` multiplies its cost on
        # the embedded server (QueueReader.unfinished_posts).
        unfinished = {
            e["status_id"]
            for e in await self.pending.unfinished_posts(
                list({s["author_id"] for s in truth}), NOT_DONE_STATES
            )
            if e.get("status_id") in truth_ids
        }
        floor = truth[-1]["_id"] if len(truth) >= cap else None
        shown: list[Item] = await self.layout.items(owner, floor)
        extra = [(s, a) for s, a in shown if s not in truth_ids]
        if any(a not in allowed for _, a in extra):
            return False
        if extra and len(await self._existing([s for s, _ in extra])) != len(extra):
            return False
        return window_misses_none([s for s, _ in shown], truth, unfinished, cap)

    async def _existing(self, ids: list[ObjectId]) -> set[ObjectId]:
        """Those of `ids` whose status exists. By `_id` alone (a broadcast on a sharded
        cluster): adding the authors' `$in` would make the planner cross two `$in` lists, 30x
        slower for a full timeline on the embedded server (docs/scaling.md)."""
        found: set[ObjectId] = set()
        for chunk in chunked(ids, IDS_PER_QUERY):
            cursor = self.statuses.find({"_id": {"$in": chunk}}, {"_id": 1})
            found.update([d["_id"] async for d in cursor])
        return found
