"""hybrid (push for most, pull for the few): ordinary authors are fanned out as per-receiver
copies (the materialized-timeline machinery over receiver_copies' entries layout, in hybrid's
own collections); an author with more than HYBRID_THRESHOLD friends is not, and a page merges
the reader's entries with the newest statuses of their large-audience friends (merge.py).

Cost model. A post by an ordinary author costs what it costs in receiver_copies; a post by a
large author writes only the status and the author's own copy. A first page costs three queries:
the reader's `large_friends` pairs (which friends are large: maintained by the worker, so no
friend's user document is read), their entries, and those friends' statuses (one query per
LARGE_AUTHORS_PER_QUERY of them). A crossing costs one pair per friend of the author, plus,
downwards, a backfill of the author's window to each active friend (docs/design.md, "hybrid").

Crossing the threshold, in the author's own events (their lease orders them with the author's
posts and deletes), state first so that a crash mid-way is seen and finished by the retry:
- upwards: state `ascending`, a merged pair with every current friend, state `large`. From its
  pair on, a reader's pages take the author from `statuses` and ignore the author's copies; the
  copies are left to age out (trims) or to go with the next rebuild of that reader, which no
  longer counts the author as materialized. They are true items, so a trim that counts them
  keeps every item the window needs, and a removal still finds them as holders and refills.
- downwards: state `descending`, the pairs marked materialized (a concurrent rebuild of a reader
  now keeps and refills the author's copies), the author's window copied to each active friend,
  the pairs removed (pages now take the author from the entries), state removed.
Readers see neither duplicates nor holes at any point: a page reads each author from exactly one
side, and that side holds the author's whole window. Cursors are status ids on both sides.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.storage.chunks import chunked
from app.storage.db import Session
from app.storage.shard_plan import ShardPlan
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery
from app.strategies.hybrid.merge import MergedItems
from app.strategies.hybrid.pairs import PAIRS_PER_WRITE, LargeAudience
from app.strategies.materialized import FANOUT_BATCH, MaterializedTimelines
from app.strategies.paging import Documents, count_newer, read_page, timeline_ids
from app.strategies.receiver_copies.entries import Entries, entry
from app.strategies.truth import newest_statuses

# hybrid's own collections: its fanned-out side in receiver_copies' layout, and its bookkeeping
# of large-audience authors (pairs.py).
ENTRIES = "hybrid_entries"
META = "hybrid_meta"
LARGE_AUTHORS = "large_authors"
LARGE_FRIENDS = "large_friends"
# How its collections spread over a cluster (app/storage/sharding.py, docs/scaling.md).
SHARDS = (
    ShardPlan(ENTRIES, (("owner_id", "hashed"),), "as timeline_entries"),
    ShardPlan(META, (("owner_id", "hashed"),), "as timeline_meta"),
    ShardPlan(LARGE_AUTHORS, (("_id", "hashed"),), "_id is the author: one small document"),
    ShardPlan(
        LARGE_FRIENDS,
        (("owner_id", "hashed"),),
        "a page reads its owner's pairs on one shard; a crossing's per-author update is a "
        "broadcast, as rare as the crossing",
    ),
)

# A large author is fanned out again only once their friend count falls a tenth below the
# threshold (at least one friend below it): a crossing down copies the author's window to every
# friend (15 s of worker time at 1,000 friends on the embedded server, docs/benchmarks.md
# "hybrid"), and an author hovering at the threshold paid it at each unfriend. Crossing up
# stays at the threshold: it costs one pair per friend.
HYSTERESIS_FRACTION = 10  # the band is threshold // 10 wide


def low_mark(threshold: int) -> int:
    """The friend count at or below which a large author is fanned out again."""
    return threshold - max(1, threshold // HYSTERESIS_FRACTION)


class Hybrid:
    name = "hybrid"
    reads_truth = False

    def __init__(
        self, collab: Collaborators, entries: Entries, large: LargeAudience, threshold: int
    ) -> None:
        self.max_items = collab.max_items
        self.statuses = collab.statuses
        self.graph = collab.graph
        self.threshold = threshold
        self.large = large
        # The fanned-out side: receiver_copies' layout over hybrid's own collections, kept by
        # the materialized-timeline machinery over the friends each owner's entries hold.
        self.entries = entries
        self.timelines = MaterializedTimelines(
            entries, collab, friends_of=self._materialized_friends
        )
        self.pages = MergedItems(
            Documents(entries.entries, "status_id", collab.max_items),
            collab.statuses,
            collab.max_items,
        )

    async def ensure_indexes(self) -> None:
        """Its indexes are on the Beanie models (app/storage/models_copies.py,
        app/storage/models_hybrid.py)."""

    # -- synchronous part ----------------------------------------------------------------------
    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add to a status."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        await self.entries.own_post(status, session=session)

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        await self.entries.own_delete(status, session=session)

    async def after_post(self, status: dict[str, Any]) -> None:
        """The author's copy was written in the transaction."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """The author's copy went in the transaction."""

    # -- reading -------------------------------------------------------------------------------
    async def _scope(self, user_id: ObjectId) -> dict[str, Any]:
        """The entries side of the page; the large friends it leaves out are merged in from
        `statuses` (merge.MergedItems reads them back)."""
        large = [author for author, _ in await self.large.of_reader(user_id)]
        if not large:
            return {"owner_id": user_id}
        return {"owner_id": user_id, "author_id": {"$nin": large}}

    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        scope = await self._scope(user_id)
        return await read_page(
            self.pages, scope, self.max_items, limit=limit, before=before, after=after
        )

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        return await count_newer(self.pages, await self._scope(user_id), after)

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return await timeline_ids(self.pages, await self._scope(user_id), self.max_items)

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        """The entries side's query as a first page sends it: without the large friends'
        `$nin` (merge.entries_page). Their statuses are read by a second query."""
        return self.pages.entries.first_page_query({"owner_id": user_id}, limit)

    # -- what the entries hold -----------------------------------------------------------------
    async def _materialized_friends(self, owner_id: ObjectId) -> list[ObjectId]:
        """All friends but the large ones whose copies this owner no longer keeps."""
        merged = {a for a, kept in await self.large.of_reader(owner_id) if not kept}
        return [f for f in await self.graph.friend_ids(owner_id) if f not in merged]

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        # Only a settled large author is skipped: mid-crossing (a crash left it so), fanning
        # out is always safe, since readers who merge the author ignore the copies.
        if await self.large.state(author_id) != "large":
            await self.timelines.apply_posted(author_id, status_id)
            return
        # Readers merge the status in; only the author's own copy is written, as a fan-out to
        # one receiver: the API wrote it already unless hybrid was not the serving strategy
        # then (a switch maintains it beside the old one), and a repeat inserts nothing.
        status = await self.statuses.find_one(
            {"author_id": author_id, "_id": status_id}, {"audience": 0}
        )
        if status is not None:
            await self.timelines.fan_out(status, [author_id])

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        await self.timelines.apply_deleted(author_id, status_id)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        await self._cross(author_id)
        if await self.large.state(author_id) != "large":
            await self.timelines.apply_friendship(author_id, other_id)
        elif await self.graph.are_friends(author_id, other_id):
            await self.large.link(other_id, author_id)
        else:
            # Copies from before the author became large leave like any ex-friend's.
            await self.timelines.apply_friendship(author_id, other_id)
            await self.large.unlink(other_id, author_id)

    async def rebuild(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return await self.timelines.rebuild(user_id)

    async def rebuild_author(self, author_id: ObjectId) -> int:
        """`_cross`, and for an author who stays large, their pairs made exactly their
        friends again (repairs drift; a friendship event does only the pair it concerns)."""
        changed = await self._cross(author_id)
        if not changed and await self.large.state(author_id) == "large":
            changed = await self.large.link_all(author_id, await self.graph.friend_ids(author_id))
        return changed

    async def _cross(self, author_id: ObjectId) -> int:
        """Bring the author to the side their friend count is on now: large above the
        threshold, fanned out at or below `low_mark`, and between the two on the side they are
        on (a crossing a crash interrupted is finished in its own direction). Runs only under
        the author's lease."""
        count = await self.graph.friend_count(author_id)
        state = await self.large.state(author_id)
        stays = state in ("large", "ascending") and count > low_mark(self.threshold)
        large = count > self.threshold or stays
        if large and state != "large":
            return await self._ascend(author_id)
        if not large and state is not None:
            return await self._descend(author_id)
        return 0

    async def _ascend(self, author_id: ObjectId) -> int:
        await self.large.set_state(author_id, "ascending")
        changed = await self.large.link_all(author_id, await self.graph.friend_ids(author_id))
        await self.large.set_state(author_id, "large")
        return changed

    async def _descend(self, author_id: ObjectId) -> int:
        await self.large.set_state(author_id, "descending")
        await self.large.materialize_all(author_id)
        friends = await self.graph.friend_ids(author_id)
        changed = await self._backfill(author_id, await self.timelines.active(friends, author_id))
        changed += await self.large.unlink_all(author_id)
        await self.large.set_state(author_id, None)
        return changed

    async def _backfill(self, author_id: ObjectId, owners: list[ObjectId]) -> int:
        """Copy the author's window (TIMELINE_MAX newest statuses) to each of `owners`, as a
        befriending does, in inserts of about FANOUT_BATCH entries."""
        statuses = await newest_statuses(self.statuses, author_id, self.max_items)
        if not statuses:
            return 0
        if len(statuses) >= self.max_items:
            # The owners miss the author's older statuses exactly as if trimmed: later removals
            # must refill them (as after a backfill). Marked before the copies.
            await self.entries.mark_all_trimmed(owners)
        # At most PAIRS_PER_WRITE owners per insert: each group's trim check is an `$in` of them.
        per_insert = max(1, min(PAIRS_PER_WRITE, FANOUT_BATCH // len(statuses)))
        inserted = 0
        for group in chunked(owners, per_insert):
            inserted += await self.entries.insert_new(
                [entry(o, s) for o in group for s in statuses]
            )
            for owner in await self.entries.over(group):
                await self.timelines.trim(owner)
        return inserted


def build(collab: Collaborators, threshold: int) -> Hybrid:
    entries = Entries(collab.collection(ENTRIES), collab.collection(META), collab.max_items)
    large = LargeAudience(collab.collection(LARGE_AUTHORS), collab.collection(LARGE_FRIENDS))
    return Hybrid(collab, entries, large, threshold)
