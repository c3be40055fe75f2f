"""per-receiver copies (fan-out-on-write): one entry per (owner, status) in `timeline_entries`,
carrying what a page shows, so a page is one query over the unique `(owner_id, status_id)` index.

The worker writes the copies with unordered bulk upserts keyed on that unique pair, so a repeated
or resumed fan-out inserts nothing twice. Each owner's entries are trimmed to TIMELINE_MAX now
and then (see TRIM_EVERY); a trimmed timeline that loses entries to an unfriend or a delete is
refilled from the source of truth, so it never shows fewer than it should.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from app import checkpoint
from app.checkpoint import fenced
from app.db import Session
from app.strategies.base import Contention, TimelineStrategy
from app.strategies.common import befriend_window, truth_timeline
from app.strategies.receiver_entries import FANOUT_BATCH as FANOUT_BATCH
from app.strategies.receiver_entries import TRIM_EVERY as TRIM_EVERY
from app.strategies.receiver_entries import bulk_upsert, insert_new
from app.strategies.receiver_entries import entry as _entry
from app.strategies.receiver_entries import should_trim as _should_trim
from app.strategies.receiver_entries import upsert as _upsert
from app.strategies.receiver_settled import settled

# A rebuild pass is repeated only when a concurrent change to this owner's timeline made it act
# on a stale view (a re-friendship's backfill, another refill of the same owner); new posts and
# their fan-outs do not count (see `_settled`). Each repeat needs yet another such change during
# the previous pass. Past this many, the event is retried a little later as contention
# (fanout/worker.py), which does not count towards parking it as dead.
REBUILD_PASSES = 8


class Unsettled(Contention):
    """A rebuild kept racing concurrent changes; the worker retries the event later."""


class ReceiverCopies(TimelineStrategy):
    name = "receiver_copies"
    id_field = "status_id"

    def collection(self) -> AsyncCollection[Any]:
        return self.store.timeline_entries

    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        return {"owner_id": user_id}

    # -- synchronous part ----------------------------------------------------------------------
    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        await self.collection().insert_one(_entry(status["author_id"], status), session=session)

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        await self.collection().delete_one(
            {"owner_id": status["author_id"], "status_id": status["_id"]}, session=session
        )

    # -- bulk writes ---------------------------------------------------------------------------
    async def _bulk_upsert(self, ops: Iterable[UpdateOne]) -> int:
        """Unordered bulk upserts in FANOUT_BATCH-sized batches; returns entries inserted."""
        return await bulk_upsert(self.collection(), ops)

    async def _insert_new(self, entries: list[dict[str, Any]]) -> int:
        """Insert fresh copies with one unordered `insert_many`; returns how many were new
        (receiver_entries.insert_new)."""
        return await insert_new(self.collection(), entries)

    async def _trim_over(self, owners: Sequence[ObjectId]) -> None:
        """Trim those of `owners` holding more than TIMELINE_MAX entries; one counting query
        for the whole batch instead of one query per owner."""
        if not owners:
            return
        over = self.collection().aggregate(
            [
                {"$match": {"owner_id": {"$in": list(owners)}}},
                {"$group": {"_id": "$owner_id", "n": {"$sum": 1}}},
                {"$match": {"n": {"$gt": self.max_items}}},
            ]
        )
        for owner in [d["_id"] async for d in await over]:
            await self.trim(owner)

    async def fan_out(self, status: dict[str, Any], receivers: Sequence[ObjectId]) -> int:
        """Copy `status` to `receivers` in FANOUT_BATCH batches, in receiver id order, saving
        the last receiver done after each batch but the last (app.checkpoint): a fan-out
        resumed after a crash redoes at most one batch, and the unique key makes even that
        insert nothing."""
        cp = checkpoint.current.get()
        order = sorted(set(receivers))
        if cp is not None and cp.resume_after is not None:
            order = [r for r in order if r > cp.resume_after]
        inserted = 0
        for start in range(0, len(order), FANOUT_BATCH):
            batch = order[start : start + FANOUT_BATCH]
            inserted += await self._insert_new(
                [_entry(r, status) for r in await self._active(batch, status["author_id"])]
            )
            await self._trim_over([r for r in batch if _should_trim(r, status["_id"])])
            # No save after the last batch: the event is marked done next (by its lease owner
            # only), so that save would fence nothing and cost two writes per post, most of a
            # small fan-out's bookkeeping.
            if cp is not None and start + FANOUT_BATCH < len(order):
                await cp.save(batch[-1])
        return inserted

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return await self.rebuild(user_id)

    async def _beyond(self, owner_id: ObjectId) -> ObjectId | None:
        """The newest status id beyond the owner's TIMELINE_MAX newest entries, if any."""
        cursor = (
            self.collection()
            .find({"owner_id": owner_id}, {"status_id": 1})
            .sort("status_id", -1)
            .skip(self.max_items)
            .limit(1)
        )
        beyond = await cursor.to_list()
        return beyond[0]["status_id"] if beyond else None

    async def trim(self, owner_id: ObjectId) -> int:
        """Drop entries beyond the owner's TIMELINE_MAX newest.

        Another worker may be removing entries of this owner at the same time (an unfriend or a
        delete by another author); a trim that counted them cuts entries that belong in the
        window. So the owner is marked trimmed *before* the look that sets the cut (a removal
        that checks the mark afterwards refills), and a trim left with fewer than TIMELINE_MAX
        entries (a removal overlapped it) refills the owner itself. Three workers in
        tests/test_worker_multi.py lost entries this way before."""
        if await self._beyond(owner_id) is None:
            return 0
        await self._mark_trimmed(owner_id)
        cut = await self._beyond(owner_id)
        if cut is None:
            return 0
        coll = self.collection()
        async with fenced():
            result = await coll.delete_many({"owner_id": owner_id, "status_id": {"$lte": cut}})
        left = await coll.count_documents({"owner_id": owner_id}, limit=self.max_items)
        if left < self.max_items:
            await self.rebuild(owner_id)
        return result.deleted_count

    async def _mark_trimmed(self, owner_id: ObjectId) -> None:
        async with fenced():
            await self.store.timeline_meta.update_one(
                {"owner_id": owner_id}, {"$set": {"trimmed": True}}, upsert=True
            )

    async def _refill_trimmed(self, owners: Sequence[ObjectId]) -> set[ObjectId]:
        """Rebuild those of `owners` that were trimmed before: having lost entries, they may
        now miss older statuses. Returns the owners rebuilt."""
        meta = self.store.timeline_meta
        rebuilt: set[ObjectId] = set()
        for start in range(0, len(owners), FANOUT_BATCH):  # bounded `$in` lists
            chunk = list(owners[start : start + FANOUT_BATCH])
            cursor = meta.find({"owner_id": {"$in": chunk}, "trimmed": True}, {"owner_id": 1})
            for doc in await cursor.to_list():
                await self.rebuild(doc["owner_id"])
                rebuilt.add(doc["owner_id"])
        return rebuilt

    async def _mark_owed(self, owners: Sequence[ObjectId], status_id: ObjectId) -> None:
        """Record on the trimmed ones of `owners` that the removal of `status_id` owes them a
        refill, durably, before the copies go: a retry after a crash (or a refill that gave up)
        finds every owner still owed one even though the copies are gone."""
        meta = self.store.timeline_meta
        for start in range(0, len(owners), FANOUT_BATCH):  # bounded `$in` lists
            chunk = list(owners[start : start + FANOUT_BATCH])
            async with fenced():
                await meta.update_many(
                    {"owner_id": {"$in": chunk}, "trimmed": True},
                    {"$addToSet": {"owed": status_id}},
                )

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        status = await self.store.statuses.find_one(
            {"author_id": author_id, "_id": status_id}, {"audience": 0}
        )
        if status is None:
            return  # deleted meanwhile: its delete event removes whatever copies exist
        receivers = [author_id, *await self.graph.friend_ids(author_id)]
        await self.fan_out(status, receivers)

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Every copy goes first, whatever then happens to the refills (a deleted status must
        leave every timeline even if a refill keeps failing). Trimmed timelines that held a
        copy are then refilled from the truth: they may now miss an older status. The author's
        own copy went synchronously (status_deleted), so the author counts as a holder.

        Whom a refill is owed is recorded before the delete (`owed` in timeline_meta) and
        cleared after each refill, so a retry after a crash or a failed refill still refills
        every one of them although no copy is left to find."""
        coll = self.collection()
        # By status id (its own index), not by the owners: a big author's copies are on every
        # shard anyway, and an `$in` of thousands of owners costs time growing with the square
        # of the list on the embedded server (docs/scaling.md, "allowed broadcasts").
        copies = {"status_id": status_id}
        found = [d["owner_id"] async for d in coll.find(copies, {"owner_id": 1})]
        holders = sorted({author_id, *found})
        await self._mark_owed(holders, status_id)
        async with fenced():
            await coll.delete_many(copies)
        # Holders first trimmed between the mark and the delete (by another author's fan-out)
        # lost the copy after their trim. A crash right before this second mark leaves those
        # unrefilled: it needs that concurrent first trim too (`timeline check` reports it).
        await self._mark_owed(holders, status_id)
        # A refill is owed only to the author and current friends (an ex-friend's timeline is
        # refilled by the author's unfriend event, applied in order with this one).
        owners = sorted({author_id, *await self.graph.friend_ids(author_id)})
        meta = self.store.timeline_meta
        for start in range(0, len(owners), FANOUT_BATCH):  # bounded `$in` lists
            chunk = owners[start : start + FANOUT_BATCH]
            cursor = meta.find({"owner_id": {"$in": chunk}, "owed": status_id}, {"owner_id": 1})
            for doc in await cursor.to_list():
                await self.rebuild(doc["owner_id"])
                async with fenced():
                    await meta.update_one(
                        {"owner_id": doc["owner_id"]}, {"$pull": {"owed": status_id}}
                    )

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        if await self.graph.are_friends(author_id, other_id):
            statuses = await befriend_window(self, author_id, other_id, self._mark_trimmed)
            if statuses is None:
                return
            inserted = await self._bulk_upsert(_upsert(other_id, s) for s in statuses)
            if inserted:
                await self.trim(other_id)
        else:
            async with fenced():
                await self.collection().delete_many({"owner_id": other_id, "author_id": author_id})
            # Even when nothing was deleted: a retry after a crash between the delete and the
            # refill finds nothing to delete, yet still owes the refill.
            await self._refill_trimmed([other_id])

    async def rebuild(self, user_id: ObjectId) -> int:
        """Make `user_id`'s entries exactly the truth, safely against concurrent handlers.

        Handlers of other authors (their posts, deletes, unfriends and re-friends) and other
        refills of this owner run at the same time; author leases only order one author's
        events. So a reconcile pass can act on a stale view: remove the entries of an author
        who was re-befriended (and backfilled) meanwhile, or cut below a window that another
        author's unfriend has since shrunk. Every pass therefore ends with a fresh look at the
        truth (`_settled`), and a pass that disagrees with it is repeated. Because the check
        follows this rebuild's own deletes, the last rebuild to delete is also the last to
        check. Three worker processes lost entries before this (tests/test_concurrent_workers.py).
        """
        changed = 0
        for _ in range(REBUILD_PASSES):
            changed += await self._reconcile(user_id)
            if await self._settled(user_id):
                return changed
        raise Unsettled(f"timeline of {user_id} kept changing during {REBUILD_PASSES} passes")

    async def _settled(self, user_id: ObjectId) -> bool:
        """Whether `user_id`'s entries agree with the truth read now, over what a refill owns
        (receiver_settled.settled)."""
        return await settled(self.graph, self.store, self.collection(), user_id, self.max_items)

    async def _reconcile(self, user_id: ObjectId) -> int:
        """One pass: upsert the truth, then remove what has a reason to go (an author who is no
        longer a friend, a status that is gone, anything below the TIMELINE_MAX window)."""
        coll = self.collection()
        friends = await self._materialized_friends(user_id)
        truth = await truth_timeline(self.store.statuses, user_id, friends, self.max_items)
        if len(truth) >= self.max_items:
            # Older statuses are about to be cut off: later removals must refill this
            # timeline. Marked before the cut, so a removal that checks afterwards sees it.
            await self._mark_trimmed(user_id)
        changed = await self._bulk_upsert(_upsert(user_id, s) for s in truth)
        # Re-read the graph after writing: an unfriend or delete that raced with the upserts
        # above either saw them (and removed them) or is seen here.
        allowed = [user_id, *await self._materialized_friends(user_id)]
        async with fenced():
            result = await coll.delete_many({"owner_id": user_id, "author_id": {"$nin": allowed}})
        changed += result.deleted_count
        ids = [d["status_id"] async for d in coll.find({"owner_id": user_id}, {"status_id": 1})]
        # By `_id` alone (a broadcast on a sharded cluster): adding the authors' `$in` would make
        # the planner cross two `$in` lists, 30x slower for a full timeline on the embedded
        # server (docs/scaling.md); a timeline's authors span most shards anyway.
        existing = {
            d["_id"] async for d in self.store.statuses.find({"_id": {"$in": ids}}, {"_id": 1})
        }
        gone = [i for i in ids if i not in existing]
        if gone:
            async with fenced():
                result = await coll.delete_many({"owner_id": user_id, "status_id": {"$in": gone}})
            changed += result.deleted_count
        if len(truth) >= self.max_items:
            async with fenced():
                result = await coll.delete_many(
                    {"owner_id": user_id, "status_id": {"$lt": truth[-1]["_id"]}}
                )
            changed += result.deleted_count
        return changed
