"""inbox buckets (fan-out on write, bucketed): each reader's timeline is a chain of bucket
documents of up to INBOX_BUCKET_SIZE entries, newest first (buckets.py),
each carrying what a page shows of its status; a page is the head bucket, or the bucket holding
the `before` cursor, and the one below it when the page needs more, and nothing else.

Cost model: a page reads at most 1 + ceil((limit + 1) / ceil(INBOX_BUCKET_SIZE / 2)) buckets
(a head split leaves half a bucket on each side; 2 for the default page of 20 and buckets of 50,
and a first page of up to 24 is the head alone) by point look-ups, whatever the friend count,
the timeline's length and what was removed, on any server. A post costs one conditional update
of each receiver's head (the entry: ids, handle, text, time), in unordered bulk writes; once per
INBOX_BUCKET_SIZE / 2 appends a receiver's head splits (an insert and an update), and a timeline
at TIMELINE_MAX also trims its oldest entry (a read of the chain and an update).
The fan-out, backfills, removals, refills and rebuilds are the materialized-timeline machinery
(app.strategies.materialized) over the bucket layout (layout.py); this module adds the author's
own writes after the API's commit, and pages that walk the chain.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.storage.db import Session
from app.storage.shard_plan import ShardPlan
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery, StatusView
from app.strategies.inbox_buckets.buckets import Inbox
from app.strategies.inbox_buckets.chain import MAX_ID, MIN_ID, Chain, Entry, entry, view
from app.strategies.inbox_buckets.layout import Buckets
from app.strategies.materialized import MaterializedTimelines
from app.strategies.truth import hydrate

COLLECTION = "inbox_buckets"
# How its collection spreads over a cluster (app/storage/sharding.py, docs/scaling.md).
SHARDS = (
    ShardPlan(
        COLLECTION,
        (("owner_id", "hashed"), ("hi", 1)),
        "owner-local like timeline_entries: a page's bucket look-ups, an append to the head and "
        "a rebuild hit one shard; the unique (owner_id, hi) chain index is prefixed by the key, "
        "and `hi` as suffix lets a heavy reader's range split",
    ),
)
DEFAULT_BUCKET_SIZE = 50
# What the unread count reads of each bucket: the entries' ids (and authors, for any check of
# who may be shown) and the link to the next bucket; never the texts (up to TIMELINE_MAX of them,
# ~500 bytes each, on every poll).
COUNT_FIELDS = {"items.s": 1, "items.a": 1, "lo": 1, "hi": 1}


class InboxBuckets:
    name = "inbox_buckets"
    reads_truth = False

    def __init__(self, collab: Collaborators, inbox: Inbox) -> None:
        self.max_items = collab.max_items
        self.statuses = collab.statuses
        self.inbox = inbox
        self.timelines = MaterializedTimelines(Buckets(inbox), collab)

    async def ensure_indexes(self) -> None:
        """Its indexes are on the Beanie model (app.storage.models.InboxBucket)."""

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add to a status."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """The author's entry is appended after the commit (`after_post`)."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """The author's entry goes after the commit (`after_delete`)."""

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
        if await self.statuses.find_one(mine, {"_id": 1}) is None:
            await self.inbox.remove_status(author, status["_id"])

    async def after_delete(self, status: dict[str, Any]) -> None:
        await self.inbox.remove_status(status["author_id"], status["_id"])

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self.timelines.apply_posted(author_id, status_id)

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self.timelines.apply_deleted(author_id, status_id)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        await self.timelines.apply_friendship(author_id, other_id)

    async def rebuild(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

    async def rebuild_author(self, user_id: ObjectId) -> int:
        return 0  # nothing follows from being an author

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

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
        hydrated = {v.id: v for v in await hydrate(self.statuses, bare)} if bare else {}
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
            self.inbox.coll,
            {"owner_id": user_id, "hi": {"$in": his}},
            [("hi", -1)],
            len(his),
            {"items": 1, "lo": 1, "hi": 1},
        )

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return (await self.inbox.chain(user_id)).ids()[: self.max_items]


def build(collab: Collaborators, bucket_size: int) -> InboxBuckets:
    return InboxBuckets(collab, Inbox(collab.collection(COLLECTION), bucket_size, collab.max_items))


__all__ = ["Chain", "InboxBuckets", "build"]
