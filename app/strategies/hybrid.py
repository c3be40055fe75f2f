"""hybrid (push for most, pull for the few): ordinary authors are fanned out as per-receiver
copies (receiver_copies, reused whole); an author with more than HYBRID_THRESHOLD friends is not,
and a page merges the reader's entries with the newest statuses of their large-audience friends
(app/strategies/hybrid_merge.py).

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

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from bson import ObjectId
from pymongo import UpdateOne

from app.checkpoint import fenced
from app.db import Session
from app.graph import Graph
from app.settings import HYBRID_THRESHOLD_DEFAULT, StrategyName
from app.store import Store
from app.strategies.base import PageQuery, StatusView
from app.strategies.common import newest_statuses
from app.strategies.hybrid_merge import entries_page, large_of, merge_count, merge_find
from app.strategies.hybrid_pairs import PAIRS_PER_WRITE, LargeAudience
from app.strategies.receiver_copies import ReceiverCopies
from app.strategies.receiver_entries import FANOUT_BATCH, entry
from app.strategies.receiver_settled import settled

# A large author is fanned out again only once their friend count falls a tenth below the
# threshold (at least one friend below it): a crossing down copies the author's window to every
# friend (15 s of worker time at 1,000 friends on the embedded server, docs/benchmarks.md
# "hybrid"), and an author hovering at the threshold paid it at each unfriend. Crossing up
# stays at the threshold: it costs one pair per friend.
HYSTERESIS_FRACTION = 10  # the band is threshold // 10 wide


def low_mark(threshold: int) -> int:
    """The friend count at or below which a large author is fanned out again."""
    return threshold - max(1, threshold // HYSTERESIS_FRACTION)


class Hybrid(ReceiverCopies):
    # mypy infers ReceiverCopies.name as its own literal; a subclass names itself all the same.
    name: ClassVar[StrategyName] = "hybrid"  # type: ignore[assignment]

    def __init__(
        self,
        store: Store,
        graph: Graph,
        max_items: int,
        threshold: int = HYBRID_THRESHOLD_DEFAULT,
    ) -> None:
        # The materialized side: receiver_copies' code over hybrid's own collections (the seam
        # where bucketed inboxes would plug in instead; docs/design.md, "hybrid").
        own = replace(store, timeline_entries=store.hybrid_entries, timeline_meta=store.hybrid_meta)
        super().__init__(own, graph, max_items)
        self.threshold = threshold
        self.large = LargeAudience(store)

    # -- reading -------------------------------------------------------------------------------
    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        """The entries side of the page; the large friends it leaves out are merged in from
        `statuses` by `_find` and `_count` (hybrid_merge.large_of reads them back)."""
        large = [author for author, _ in await self.large.of_reader(user_id)]
        if not large:
            return {"owner_id": user_id}
        return {"owner_id": user_id, "author_id": {"$nin": large}}

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        """The entries side's query as a first page sends it: without the large friends'
        `$nin` (hybrid_merge.entries_page). Their statuses are read by a second query."""
        return PageQuery(
            self.collection(),
            {"owner_id": user_id},
            [(self.id_field, -1)],
            min(limit, self.max_items),
            self._projection(),
        )

    async def _find(
        self, scope: dict[str, Any], id_range: dict[str, ObjectId] | None, limit: int
    ) -> list[StatusView]:
        large = large_of(scope)
        if not large:
            return await super()._find(scope, id_range, limit)
        entries = await entries_page(self.collection(), scope, id_range, limit)
        return await merge_find(self.store.statuses, large, entries, id_range, limit)

    async def _count(self, scope: dict[str, Any], id_range: dict[str, ObjectId] | None) -> int:
        counted = await super()._count(scope, id_range)
        large = large_of(scope)
        if not large:
            return counted
        return await merge_count(self.store.statuses, large, counted, id_range, self.max_items)

    # -- what the entries hold -----------------------------------------------------------------
    async def _materialized_friends(self, owner_id: ObjectId) -> list[ObjectId]:
        """All friends but the large ones whose copies this owner no longer keeps."""
        merged = {a for a, kept in await self.large.of_reader(owner_id) if not kept}
        return [f for f in await self.graph.friend_ids(owner_id) if f not in merged]

    async def _settled(self, user_id: ObjectId) -> bool:
        # receiver_copies' check, over the materialized friends only (it reads them from the
        # graph it is given).
        graph = _MaterializedGraph(self)
        return await settled(graph, self.store, self.collection(), user_id, self.max_items)

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        # Only a settled large author is skipped: mid-crossing (a crash left it so), fanning
        # out is always safe, since readers who merge the author ignore the copies.
        if await self.large.state(author_id) != "large":
            await super().apply_posted(author_id, status_id)
            return
        # Readers merge the status in; only the author's own copy is written, as a fan-out to
        # one receiver: the API wrote it already unless hybrid was not the serving strategy
        # then (a switch maintains it beside the old one), and a repeat inserts nothing.
        status = await self.store.statuses.find_one(
            {"author_id": author_id, "_id": status_id}, {"audience": 0}
        )
        if status is not None:
            await self.fan_out(status, [author_id])

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        await self._cross(author_id)
        if await self.large.state(author_id) != "large":
            await super().apply_friendship(author_id, other_id)
        elif await self.graph.are_friends(author_id, other_id):
            await self.large.link(other_id, author_id)
        else:
            # Copies from before the author became large leave like any ex-friend's.
            await super().apply_friendship(author_id, other_id)
            await self.large.unlink(other_id, author_id)

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
        changed = await self._backfill(author_id, await self._active(friends, author_id))
        changed += await self.large.unlink_all(author_id)
        await self.large.set_state(author_id, None)
        return changed

    async def _backfill(self, author_id: ObjectId, owners: Sequence[ObjectId]) -> int:
        """Copy the author's window (TIMELINE_MAX newest statuses) to each of `owners`, as a
        befriending does, in inserts of about FANOUT_BATCH entries."""
        statuses = await newest_statuses(self.store.statuses, author_id, self.max_items)
        if not statuses:
            return 0
        if len(statuses) >= self.max_items:
            # The owners miss the author's older statuses exactly as if trimmed: later removals
            # must refill them (ReceiverCopies.apply_friendship). Marked before the copies.
            await self._mark_all_trimmed(owners)
        # At most PAIRS_PER_WRITE owners per insert: each group's trim check is an `$in` of them.
        per_insert = max(1, min(PAIRS_PER_WRITE, FANOUT_BATCH // len(statuses)))
        inserted = 0
        for start in range(0, len(owners), per_insert):
            group = owners[start : start + per_insert]
            inserted += await self._insert_new([entry(o, s) for o in group for s in statuses])
            await self._trim_over(group)
        return inserted

    async def _mark_all_trimmed(self, owners: Sequence[ObjectId]) -> None:
        for start in range(0, len(owners), FANOUT_BATCH):
            ops = [
                UpdateOne({"owner_id": o}, {"$set": {"trimmed": True}}, upsert=True)
                for o in owners[start : start + FANOUT_BATCH]
            ]
            async with fenced():
                await self.store.timeline_meta.bulk_write(ops, ordered=False)


class _MaterializedGraph(Graph):
    """The graph as a hybrid's materialized side sees it: an owner's friends are those whose
    statuses their entries hold (`Hybrid._materialized_friends`)."""

    def __init__(self, hybrid: Hybrid) -> None:
        super().__init__(hybrid.store)
        self.hybrid = hybrid

    async def friend_ids(self, user_id: ObjectId, *, session: Session = None) -> list[ObjectId]:
        return await self.hybrid._materialized_friends(user_id)
