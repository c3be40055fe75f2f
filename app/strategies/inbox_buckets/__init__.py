"""inbox buckets (fan-out on write, bucketed): each reader's timeline is a chain of bucket
documents of up to INBOX_BUCKET_SIZE entries, newest first (buckets.py), plus loose entries a
fan-out inserted and no fold has moved into the chain yet (loose.py, fold.py); every entry
carries what a page shows of its status. A first page is one query of the head and the newest
LOOSE_READ + 1 loose entries, and the bucket below the head when the page needs more; a
`before` page reads the head range too, then the cursor's bucket and the one below.

Cost model: a page reads at most 1 + ceil((limit + 1) / ceil(INBOX_BUCKET_SIZE / 2)) buckets
by point look-ups besides the head range (2 for the default page of 20 and buckets of 50, and a
first page of up to 24 is the head alone), whatever the friend count, the timeline's length and
what was removed; the head range holds the owner's unfolded entries, at most LOOSE_READ + 1 of
them read (on mongod, in index order; the embedded server sorts the range, bounded by the fold).
A post costs one insert per receiver (the entry: ids, handle, text, time), in unordered bulk
inserts. A fold (the worker pool's pass, fanout/fold.py, after FOLD_AGE_S) moves a reader's
loose entries into the chain: one head write for what the reader received meanwhile (one
pipeline update for a batch of readers, each distinct entry sent once: heads.py), a split on
the server per half a bucket, and a trim at TIMELINE_MAX; what a head cannot take is placed as
any placement (a push per bucket touched, splits).
The fan-out, backfills, removals, refills and rebuilds are the materialized-timeline machinery
(app.strategies.materialized) over the bucket layout (layout.py); this module adds the author's
own writes after the API's commit, pages that merge the head range and walk the chain, and the
fold.
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
from app.strategies.inbox_buckets.fold import Folder
from app.strategies.inbox_buckets.layout import Buckets
from app.strategies.inbox_buckets.loose import LOOSE_READ, check_layout, merge
from app.strategies.materialized import MaterializedTimelines
from app.strategies.truth import hydrate

COLLECTION = "inbox_buckets"
# How its collection spreads over a cluster (app/storage/sharding.py, docs/scaling.md).
SHARDS = (
    ShardPlan(
        COLLECTION,
        (("owner_id", "hashed"), ("hi", 1)),
        "owner-local like timeline_entries: a page's head range and bucket look-ups, a loose "
        "entry's insert and a rebuild hit one shard; the unique (owner_id, hi, s) chain index is "
        "prefixed by the key, and `hi` as suffix lets a heavy reader's range split (the fold "
        "pass's (hi, s) scan is a broadcast, off the request path)",
    ),
)
DEFAULT_BUCKET_SIZE = 50
# What the unread count reads of each bucket: the entries' ids (and authors, for any check of
# who may be shown) and the link to the next bucket; never the texts (up to TIMELINE_MAX of them,
# ~500 bytes each, on every poll).
COUNT_FIELDS = {"items.s": 1, "items.a": 1, "lo": 1, "hi": 1, "s": 1, "gone": 1, "count": 1}


class InboxBuckets:
    name = "inbox_buckets"
    reads_truth = False

    def __init__(self, collab: Collaborators, inbox: Inbox) -> None:
        self.max_items = collab.max_items
        self.statuses = collab.statuses
        self.inbox = inbox
        self.timelines = MaterializedTimelines(Buckets(inbox), collab)
        self.folder = Folder(inbox, self.timelines.trim, self.timelines.rebuild)

    async def ensure_indexes(self) -> None:
        """Its indexes are on the Beanie model (app.storage.models.InboxBucket); a collection
        still of the previous layout is refused (LayoutOutdated: `timeline migrate`)."""
        await check_layout(self.inbox.coll)

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add to a status."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """The author's entry is inserted after the commit (`after_post`)."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """The author's entry goes after the commit (`after_delete`)."""

    # -- after the API's transaction ---------------------------------------------------------
    # The author's own entry is written after the API's transaction commits, not in it: the
    # worker writes this collection with plain writes, and on the embedded server a plain
    # write that meets a transaction's uncommitted write is retried inside the server until
    # that transaction ends, which livelocked concurrent clients
    # (tests/test_concurrent_clients.py); running the worker's writes in transactions instead
    # stalled a worker whose killed predecessor left one open (tests/test_worker_crash.py).
    # After the commit, not before: entries carry the text, so an entry for a post whose
    # transaction then failed would show a status that never existed. A crash before these
    # steps leaves them to the change's event.
    async def after_post(self, status: dict[str, Any]) -> None:
        author = status["author_id"]
        # A loose entry, as the fan-out writes for friends: one insert, folded later.
        await self.inbox.loose.insert([author], entry(status))
        # A delete that committed and was fanned out before the insert above found nothing to
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
        self,
        owner: ObjectId,
        before: ObjectId,
        head: dict[str, Any] | None,
        fields: dict[str, int] | None,
    ) -> dict[str, Any] | None:
        """The chain bucket whose range holds `before` (None: no chain entry lies below it)."""
        found = await self.inbox.holder(owner, before)
        if found is not None:
            return found
        # The cursor's status is loose or left the timeline: the bucket covering its id.
        if head is not None and head["lo"] <= before:
            return head
        lower = await self.inbox.coll.find(
            {"owner_id": owner, "hi": {"$gt": before, "$lt": MAX_ID}, "lo": {"$lte": before}},
            fields,
        ).to_list()
        return max(lower, key=lambda b: b["hi"]) if lower else None

    async def _walk(
        self,
        owner: ObjectId,
        before: ObjectId | None,
        after: ObjectId | None,
        want: int,
        fields: dict[str, int] | None = None,
    ) -> list[Entry]:
        """Up to `want` entries of the owner's timeline (chain and loose entries, no tombstoned
        status), newest first, below `before` and above `after`; buckets read whole, or only
        `fields` of them (which must include the chain's `lo` and the loose documents' `s`).

        Top-down (no `before`), the first `want` are exact whatever lies below them (`want` is
        at most TIMELINE_MAX). A `before` page needs to know that its entries are among the
        TIMELINE_MAX newest: when the head's count and the live loose entries could exceed it
        (`excess`), the walk goes `excess` entries further, and reads the whole timeline if the
        timeline ends first (docs/design.md, "inbox_buckets")."""
        head, loose = await self.inbox.loose.top(owner, fields)
        walk = _Walk(head, loose, before, after)
        if before is not None:
            if walk.more_loose:
                await walk.read_rest(self.inbox, owner, fields)
            count = head.get("count", 0) if head is not None else 0
            excess = count + walk.live_loose() - self.max_items
            start = await self._start(owner, before, head, fields)
            walk.at(start, before)
            if excess > 0:
                found = await walk.collect(self.inbox, owner, want + excess, fields)
                if len(found) < want + excess:
                    found = await self._exact_below(owner, before, want)
            else:
                found = await walk.collect(self.inbox, owner, want, fields)
        else:
            found = await walk.collect(self.inbox, owner, want, fields)
        if walk.crowded:
            # More than LOOSE_READ wait: the fold pass folds this owner at its next pass, so
            # that pages are back within the bound (on mongod the index order bounds the query
            # anyway; the embedded server sorts the owner's whole head range in memory). Not
            # here: a fold of a large backlog took a read 1.6 s (1,000 friends' posts).
            await self.inbox.loose.request_fold(owner)
        return found[:want]

    async def _exact_below(self, owner: ObjectId, before: ObjectId, want: int) -> list[Entry]:
        """The rare `before` page near the end of a timeline over TIMELINE_MAX with loose
        entries: the whole timeline is read (one query) and cut at TIMELINE_MAX."""
        chain = await self.inbox.chain(owner)
        shown = merge(chain.ids_items(), chain.loose)[: self.max_items]
        return [i for i in shown if i["s"] < before][:want]

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
        """A first page's one query: the head and the newest LOOSE_READ + 1 loose entries, one
        index range of (owner_id, hi, s). A page the head and the loose entries do not fill
        reads the bucket below the head next (as the walk does)."""
        return PageQuery(
            self.inbox.coll,
            {"owner_id": user_id, "hi": MAX_ID},
            [("s", -1)],
            LOOSE_READ + 2,
            {"items": 1, "lo": 1, "hi": 1, "s": 1, "gone": 1, "count": 1},
        )

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        chain = await self.inbox.chain(user_id)
        return [i["s"] for i in merge(chain.ids_items(), chain.loose)][: self.max_items]

    # -- folding -------------------------------------------------------------------------------
    async def fold(self, owner: ObjectId) -> int:
        """Fold the owner's loose entries into their chain (fold.py); returns how many went."""
        return await self.folder.fold(owner)

    async def fold_many(self, owners: list[ObjectId]) -> int:
        """`fold` for several owners (at most fold.FOLD_OWNERS), their bookkeeping batched."""
        return await self.folder.fold_many(owners)


class _Walk:
    """One page's walk down an owner's chain, merging the loose entries read with the head.

    What is known at each point: the chain's entries from the top (or from the `before`
    cursor's bucket) down to the lowest bucket read's `lo`, and the loose documents down to the
    last one read when more lie below (`known_to`); an entry at or above both is in its final
    place."""

    def __init__(
        self,
        head: dict[str, Any] | None,
        loose: list[dict[str, Any]],
        before: ObjectId | None,
        after: ObjectId | None,
    ) -> None:
        self.more_loose = len(loose) > LOOSE_READ
        self.crowded = self.more_loose
        self.known_to = loose[-1]["s"] if self.more_loose else MIN_ID
        self.loose = loose
        self.before = before
        self.after = after
        self.bucket = head
        self.items: list[Entry] = list(head["items"]) if head is not None else []

    def live_loose(self) -> int:
        return sum(1 for d in self.loose if "gone" not in d and d["items"])

    async def read_rest(self, inbox: Inbox, owner: ObjectId, fields: dict[str, int] | None) -> None:
        self.loose = self.loose + await inbox.loose.below(owner, self.known_to, fields)
        self.more_loose = False
        self.known_to = MIN_ID

    def at(self, start: dict[str, Any] | None, before: ObjectId) -> None:
        self.bucket = start
        self.items = [i for i in start["items"] if i["s"] < before] if start is not None else []

    def _bound(self) -> ObjectId:
        if self.bucket is None:
            return MIN_ID
        lo: ObjectId = self.bucket["lo"]
        return max(lo, self.known_to)

    def _shown(self) -> list[Entry]:
        loose = self.loose
        if self.before is not None:
            loose = [d for d in loose if d["s"] < self.before]
        shown = merge(self.items, loose)
        if self.after is not None:
            shown = [i for i in shown if i["s"] > self.after]
        return shown

    async def collect(
        self, inbox: Inbox, owner: ObjectId, want: int, fields: dict[str, int] | None
    ) -> list[Entry]:
        while True:
            bound = self._bound()
            shown = self._shown()
            final = [i for i in shown if i["s"] >= bound]
            done = bound == MIN_ID or (self.after is not None and bound <= self.after)
            if len(final) >= want or done:
                return final[:want]
            chain_lo = self.bucket["lo"] if self.bucket is not None else MIN_ID
            if self.more_loose and self.known_to >= chain_lo:
                await self.read_rest(inbox, owner, fields)
                continue
            assert self.bucket is not None  # else chain_lo is MIN_ID, at most known_to
            below = await inbox.bucket(owner, chain_lo, fields) if chain_lo != MIN_ID else None
            self.bucket = below
            if below is not None:
                self.items += below["items"]


def build(collab: Collaborators, bucket_size: int) -> InboxBuckets:
    return InboxBuckets(collab, Inbox(collab.collection(COLLECTION), bucket_size, collab.max_items))


__all__ = ["Chain", "InboxBuckets", "build"]
