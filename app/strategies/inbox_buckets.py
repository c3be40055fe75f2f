"""inbox buckets (fan-out on write, bucketed): each reader's timeline is a chain of bucket
documents of up to INBOX_BUCKET_SIZE entries, newest first (app/strategies/inbox_layout.py),
each carrying what a page shows of its status; a page is the head bucket, or the bucket holding
the `before` cursor, and the one below it when the page needs more, and nothing else.

Cost model: a page reads at most 1 + ceil((limit + 1) / ceil(INBOX_BUCKET_SIZE / 2)) buckets
(a head split leaves half a bucket on each side; 2 for the default page of 20 and buckets of 50,
and a first page of up to 24 is the head alone) by point look-ups, whatever the friend count,
the timeline's length and what was removed, on any server. A post costs one conditional update
of each receiver's head (the entry: ids, handle, text, time), in unordered bulk writes; once per
INBOX_BUCKET_SIZE / 2 appends a receiver's head splits (an insert and an update), and a timeline
at TIMELINE_MAX also trims its oldest entry (a read of the chain and an update).
Backfill, unfriend, delete and refills are as in receiver_copies, on the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from app import checkpoint
from app.checkpoint import fenced
from app.graph import Graph
from app.metrics import FANOUT_BATCH_SIZE
from app.store import Store
from app.strategies.base import Page, PageQuery, StatusView, TimelineStrategy
from app.strategies.common import befriend_window, hydrate
from app.strategies.inbox_chain import MAX_ID, MIN_ID, Chain, Entry, entry, view
from app.strategies.inbox_rebuild import rebuild_owner
from app.strategies.inbox_removals import Inbox

# Receivers per unordered bulk write of head appends: an op is ~200 bytes, so a batch stays far
# below the 16 MB command limit, and a resumed fan-out redoes at most one batch.
FANOUT_BATCH = 1000
# Owners per `$in` look-up (which receivers hold a status, which heads are trimmed): the
# embedded server's `$in` cost grows with the square of the list (app/strategies/common.py).
OWNERS_PER_QUERY = 100
DEFAULT_BUCKET_SIZE = 50
# What the unread count reads of each bucket: the entries' ids (and authors, for any check of
# who may be shown) and the link to the next bucket; never the texts (up to TIMELINE_MAX of them,
# ~500 bytes each, on every poll).
COUNT_FIELDS = {"items.s": 1, "items.a": 1, "lo": 1, "hi": 1}


class InboxBuckets(TimelineStrategy):
    name = "inbox_buckets"

    def __init__(
        self, store: Store, graph: Graph, max_items: int, bucket_size: int = DEFAULT_BUCKET_SIZE
    ) -> None:
        super().__init__(store, graph, max_items)
        self.inbox = Inbox(store.inbox_buckets, bucket_size, max_items)

    def collection(self) -> AsyncCollection[Any]:
        return self.store.inbox_buckets

    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        return {"owner_id": user_id}

    # -- after the API's transaction ---------------------------------------------------------
    # The author's own bucket is written after the API's transaction commits, not in it: the
    # worker writes heads with plain writes, and on the embedded server a plain write that meets
    # a transaction's uncommitted write is retried inside the server until that transaction
    # ends, which livelocked concurrent clients (tests/test_concurrent_clients.py); running
    # the worker's writes in transactions instead stalled a worker whose killed predecessor
    # left one open (tests/test_worker_crash.py). After the commit, not before: entries carry
    # the text, so an append for a post whose transaction then failed would show a status that
    # never existed. A crash before these steps leaves them to the change's event.
    async def after_post(self, status: dict[str, Any]) -> None:
        author = status["author_id"]
        if await self.inbox.append(author, entry(status)):
            await self.inbox.trim(author)
        # A delete that committed and was fanned out before the append above found nothing to
        # remove: undo it. A delete committed after this look finds the entry itself.
        mine = {"author_id": author, "_id": status["_id"]}
        if await self.store.statuses.find_one(mine, {"_id": 1}) is None:
            await self.inbox.remove_status(author, status["_id"])

    async def after_delete(self, status: dict[str, Any]) -> None:
        await self.inbox.remove_status(status["author_id"], status["_id"])

    # -- fan-out -------------------------------------------------------------------------------
    async def fan_out(self, status: dict[str, Any], receivers: Sequence[ObjectId]) -> int:
        """Append `status` to `receivers` in FANOUT_BATCH batches in receiver id order, saving
        the last receiver done after each batch but the last (app.checkpoint), as
        receiver_copies does; the conditional append makes a redone batch add nothing."""
        cp = checkpoint.current.get()
        order = sorted(set(receivers))
        if cp is not None and cp.resume_after is not None:
            order = [r for r in order if r > cp.resume_after]
        item = entry(status)
        appended = 0
        for start in range(0, len(order), FANOUT_BATCH):
            batch = await self._active(order[start : start + FANOUT_BATCH], status["author_id"])
            appended += await self._append_batch(batch, item)
            if cp is not None and start + FANOUT_BATCH < len(order):
                await cp.save(order[start + FANOUT_BATCH - 1])
        return appended

    async def _append_batch(self, owners: list[ObjectId], item: Entry) -> int:
        if not owners:
            return 0
        FANOUT_BATCH_SIZE.observe(len(owners))
        ops = [self.inbox.append_op(o, item) for o in owners]
        async with fenced():
            result = await self.collection().bulk_write(ops, ordered=False)
        if result.matched_count == len(owners):
            return len(owners)
        # Some heads were full, missing, at TIMELINE_MAX or already held the status: those
        # that do not hold it take the general path.
        holding = await self._holding(owners, item["s"])
        for owner in owners:
            if owner not in holding:
                await self.inbox.place(owner, [item])
                await self._trim(owner)
        return len(owners)

    async def _holding(self, owners: list[ObjectId], status_id: ObjectId) -> set[ObjectId]:
        """Those of `owners` whose head holds `status_id`. Only a head is surely on the chain:
        an interrupted split's lower part holds entries the chain may not (a crash before the
        cut), and counting it skipped the placement for good. One lower on the chain only
        costs `place` a read that finds it there."""
        held: set[ObjectId] = set()
        for start in range(0, len(owners), OWNERS_PER_QUERY):
            chunk = owners[start : start + OWNERS_PER_QUERY]
            cursor = self.collection().find(
                {"items.s": status_id, "owner_id": {"$in": chunk}}, {"owner_id": 1, "hi": 1}
            )
            held.update([d["owner_id"] async for d in cursor if d["hi"] == MAX_ID])
        return held

    async def _trim(self, owner: ObjectId) -> None:
        """Trim to TIMELINE_MAX; a trim that overlapped a removal and left the timeline short
        refills it from the truth (receiver_copies.trim)."""
        removed, left = await self.inbox.trimmed(owner)
        if removed and left < self.max_items:
            await self.rebuild(owner)

    async def _ids(self, owner: ObjectId) -> list[ObjectId]:
        return (await self.inbox.chain(owner)).ids()

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        status = await self.store.statuses.find_one(
            {"author_id": author_id, "_id": status_id}, {"audience": 0}
        )
        if status is None:
            return  # deleted meanwhile: its delete event removes whatever entries exist
        await self.fan_out(status, [author_id, *await self.graph.friend_ids(author_id)])

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """As receiver_copies: whom a refill is owed is recorded on the trimmed holders' heads
        before the entries go, then every entry goes, then the owed refills run."""
        holders = sorted({author_id, *await self._holders(status_id)})
        await self._mark_owed(holders, status_id)
        for owner in holders:
            await self.inbox.remove_status(owner, status_id)
        await self._mark_owed(holders, status_id)
        owners = sorted({author_id, *await self.graph.friend_ids(author_id)})
        for start in range(0, len(owners), OWNERS_PER_QUERY):
            chunk = owners[start : start + OWNERS_PER_QUERY]
            cursor = self.collection().find(
                {"_id": {"$in": chunk}, "owner_id": {"$in": chunk}, "owed": status_id},
                {"owner_id": 1},
            )
            for doc in await cursor.to_list():
                await self.rebuild(doc["owner_id"])
                await self._write_head(doc["owner_id"], {"$pull": {"owed": status_id}})

    async def _holders(self, status_id: ObjectId) -> set[ObjectId]:
        # By status id alone (a broadcast on a cluster): the holders are on every shard anyway,
        # as for receiver_copies' removal by status (docs/scaling.md).
        cursor = self.collection().find({"items.s": status_id}, {"owner_id": 1})
        return {d["owner_id"] async for d in cursor}

    async def _mark_owed(self, owners: Sequence[ObjectId], status_id: ObjectId) -> None:
        for start in range(0, len(owners), OWNERS_PER_QUERY):
            chunk = list(owners[start : start + OWNERS_PER_QUERY])
            await self._write_many(
                {"_id": {"$in": chunk}, "owner_id": {"$in": chunk}, "trimmed": True},
                {"$addToSet": {"owed": status_id}},
            )

    async def _write_many(self, flt: dict[str, Any], update: dict[str, Any]) -> None:
        async with fenced():
            await self.collection().update_many(flt, update)

    async def _write_head(self, owner: ObjectId, update: dict[str, Any]) -> None:
        async with fenced():
            await self.collection().update_one(
                {"_id": owner, "owner_id": owner, "hi": MAX_ID}, update
            )

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        if await self.graph.are_friends(author_id, other_id):
            statuses = await befriend_window(self, author_id, other_id, self.inbox.mark_trimmed)
            if statuses is None:
                return
            if await self.inbox.place(other_id, [entry(s) for s in statuses]):
                await self._trim(other_id)
        else:
            await self.inbox.remove(other_id, lambda chain: chain.by_author(author_id))
            # Even when nothing went: a retry after a crash still owes the refill.
            head = await self.inbox.bucket(other_id, MAX_ID)
            if head is not None and head.get("trimmed"):
                await self.rebuild(other_id)

    async def rebuild(self, user_id: ObjectId) -> int:
        return await rebuild_owner(self, user_id)

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return await self.rebuild(user_id)

    # -- reading -------------------------------------------------------------------------------
    async def _start(
        self, owner: ObjectId, before: ObjectId | None, fields: dict[str, int] | None
    ) -> dict[str, Any] | None:
        if before is None:
            return await self.inbox.bucket(owner, MAX_ID, fields)
        found = await self.inbox.holder(owner, before)
        if found is not None:
            return found
        chain = await self.inbox.chain(owner)  # the cursor's status left the timeline
        return chain.covering(before) if chain.buckets else None

    async def _walk(
        self,
        owner: ObjectId,
        before: ObjectId | None,
        after: ObjectId | None,
        want: int,
        fields: dict[str, int] | None = None,
    ) -> list[Entry]:
        """Up to `want` entries of the owner's timeline, newest first, below `before` and above
        `after`, following the chain from the bucket where they start; each bucket read whole,
        or only `fields` of it (which must include the chain's `lo`)."""
        out: list[Entry] = []
        bucket = await self._start(owner, before, fields)
        while bucket is not None and len(out) < want:
            for item in bucket["items"]:
                s = item["s"]
                if after is not None and s <= after:
                    return out[:want]
                if before is None or s < before:
                    out.append(item)
            # lo = MIN_ID: nothing can lie below, so no look-up for a bucket that is not there.
            if len(out) >= want or bucket["lo"] == MIN_ID:
                break
            if after is not None and bucket["lo"] <= after:
                break
            bucket = await self.inbox.bucket(owner, bucket["lo"], fields)
        return out[:want]

    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        want = min(limit + 1, self.max_items)
        found = await self._walk(user_id, None if after is not None else before, after, want)
        more = len(found) > limit
        return Page(
            await self._views(found[:limit]), has_older=more, gap=more and after is not None
        )

    async def _views(self, items: list[Entry]) -> list[StatusView]:
        """The page of `items`. Entries written before they carried the page's fields are
        hydrated from `statuses` (one query, only when there are any); one whose status is gone
        is left out, as its delete event is on its way."""
        bare = [i["s"] for i in items if view(i) is None]
        hydrated = {v.id: v for v in await hydrate(self.store.statuses, bare)} if bare else {}
        shown = [view(i) or hydrated.get(i["s"]) for i in items]
        return [v for v in shown if v is not None]

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        """Counted from the entries' ids and authors only: a poll never fetches the texts."""
        return len(await self._walk(user_id, None, after, self.max_items, COUNT_FIELDS))

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        """The bucket reads of a first page as one query: the head and, when the page needs
        more than the head holds, the bucket below it."""
        head = await self.inbox.bucket(user_id, MAX_ID)
        his = [MAX_ID]
        if head is not None and head["lo"] != MIN_ID and len(head["items"]) <= limit:
            his.append(head["lo"])
        return PageQuery(
            self.collection(),
            {"owner_id": user_id, "hi": {"$in": his}},
            [("hi", -1)],
            len(his),
            {"items": 1, "lo": 1, "hi": 1},
        )

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return (await self._ids(user_id))[: self.max_items]


__all__ = ["Chain", "InboxBuckets"]
