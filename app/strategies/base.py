"""The timeline strategy interface.

A strategy owns the *derived* data that makes `GET /timeline` fast (nothing, audiences, or
per-receiver copies). The source of truth is always the `statuses` and `friendships`
collections. Every strategy must present the same timeline once its events are applied:

    timeline(U) = the TIMELINE_MAX newest statuses (by id) that exist and whose author is U or a
                  current friend of U, newest first.

Event handlers (`apply_*`) are called by the fanout worker, possibly more than once and in any
order relative to events of *other* authors; events of one author are applied one at a time.
Each handler reconciles towards the current source of truth rather than replaying a delta, so a
repeated or late event changes nothing that is already right.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from app.db import Session
from app.settings import StrategyName

if TYPE_CHECKING:
    from app.activity import Activity
    from app.graph import Graph
    from app.store import Store

PAGE_PROJECTION_FIELDS = ("author", "text", "created_at")


class Contention(Exception):
    """A handler raced concurrent changes by other handlers and should simply run again soon.

    Not a fault of the event: the worker retries it shortly without counting the attempt
    towards parking it as dead (fanout/worker.py), since "dead" is for poison events only."""


@dataclass(frozen=True)
class StatusView:
    id: ObjectId
    author: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class Page:
    items: list[StatusView]
    has_older: bool  # a `before` page after the last item would not be empty
    gap: bool  # an `after` page left out newer items than `limit`
    # Where the next `before` page starts when it is not the last item's id: a checked page
    # (app.timeline_reads) whose items were all hidden still continues past them.
    resume_before: ObjectId | None = None

    def next_before(self) -> ObjectId | None:
        """The `before` cursor of the page after this one; None at the end."""
        if not self.has_older:
            return None
        if self.items:
            return self.items[-1].id
        return self.resume_before


@dataclass(frozen=True)
class PageQuery:
    """The one query behind a first timeline page; the benchmark explains it."""

    collection: AsyncCollection[Any]
    filter: dict[str, Any]
    sort: list[tuple[str, int]]
    limit: int
    projection: dict[str, int]


class TimelineStrategy(ABC):
    name: ClassVar[StrategyName]
    #: pages are read from the source of truth (statuses and friendships) at read time, so a
    #: removal shows at once and needs no check (app.timeline_reads)
    reads_truth: ClassVar[bool] = False
    #: where a page's items live, and the field holding the status id there
    id_field: ClassVar[str] = "_id"
    #: the index counts (the unread count, a `before` page's window check) are hinted to, or
    #: None: unhinted, where every field of the count's filter is in the page's index, so that
    #: the planner takes it anyway. A hint is no free insurance: SecantusDB executes a hinted
    #: query by walking the *whole* hinted index and decoding every document it points to (an
    #: unread count among 10,000 copies took 692 ms hinted, 18 ms without; docs/benchmarks.md,
    #: "Where the time goes at saturation"). Only fanout_on_read hints (unhinted, SecantusDB
    #: planned its count over `$in` authors as a scan of every status).
    count_hint: ClassVar[list[tuple[str, int]] | None] = None

    def __init__(self, store: Store, graph: Graph, max_items: int) -> None:
        # The collections and the graph reader this strategy works on, bound at start-up
        # (app.store): a process may hold strategies over different stores side by side.
        self.store = store
        self.graph = graph
        self.max_items = max_items
        # The TIMELINE_ACTIVE_DAYS window (set by app.context). None: everyone counts as
        # active, which is always safe (a strategy built on the side, during a switch).
        self.activity: Activity | None = None

    # -- set-up --------------------------------------------------------------------------------
    async def ensure_indexes(self) -> None:
        """Create indexes only this strategy needs (shared ones are on the Beanie models)."""

    @abstractmethod
    def collection(self) -> AsyncCollection[Any]:
        """The collection a timeline page is read from."""

    # -- synchronous part of writes, inside the API's transaction ------------------------------
    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Called before `status` is inserted: may add fields (e.g. its audience)."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """Called after `status` is inserted. Must make it visible to its author at once."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """Called after `status` is deleted. Must remove it from its author's timeline at once."""

    # -- after the API's transaction committed, before the reply -------------------------------
    # For derived writes that cannot run inside the transaction (inbox_buckets). Each must be
    # idempotent and must leave nothing wrong if the process dies before it runs: the change's
    # event reaches the author's own timeline too.
    async def after_post(self, status: dict[str, Any]) -> None:
        """Called once `status` is committed: make it visible to its author at once."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """Called once the delete of `status` is committed: remove it from its author's
        timeline at once."""

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Make status `status_id` reach the current friends of its author (if it still exists)."""

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Make the (already deleted) status leave every timeline, keeping each one full."""

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        """Reconcile what `other_id` sees of `author_id`'s statuses with whether they are friends
        *now*: backfill the author's newest statuses, or remove all of them."""

    async def _active(self, receivers: list[ObjectId], author_id: ObjectId) -> list[ObjectId]:
        """Those of `receivers` who read within TIMELINE_ACTIVE_DAYS (app.activity); the author
        always (their own copy is written with the post anyway). A user skipped here gets the
        status from the rebuild that follows their return: it starts after the return is
        marked, so after this look, and the status was in `statuses` before (docs/design.md)."""
        if self.activity is None:
            return receivers
        away = await self.activity.inactive_among(receivers)
        return [r for r in receivers if r == author_id or r not in away]

    async def rebuild(self, user_id: ObjectId) -> int:
        """Recompute the derived data owned by `user_id` from the source of truth. Returns the
        number of documents changed. Idempotent."""
        return 0

    async def rebuild_author(self, user_id: ObjectId) -> int:
        """Recompute the derived data that follows from `user_id` as an author rather than as
        a reader (hybrid: which side of its threshold the author is on). Called only under the
        author's lease (their events, `timeline rebuild`, a switch). Idempotent."""
        return 0

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        """Recompute the derived data that serves `user_id`'s reads from the source of truth
        (a returning inactive user, app.activity). Idempotent, so a repeated or resumed
        rebuild converges. Only strategies that skip inactive receivers have any to do."""
        return 0

    async def _materialized_friends(self, owner_id: ObjectId) -> list[ObjectId]:
        """The friends whose statuses `owner_id`'s materialized timeline holds: all of them,
        but in hybrid, which merges its large-audience authors in at read time."""
        return await self.graph.friend_ids(owner_id)

    # -- reading -------------------------------------------------------------------------------
    @abstractmethod
    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        """The filter selecting every item of `user_id`'s timeline in `collection()`."""

    def _projection(self) -> dict[str, int]:
        return {self.id_field: 1, **dict.fromkeys(PAGE_PROJECTION_FIELDS, 1)}

    async def _find(
        self, scope: dict[str, Any], id_range: dict[str, ObjectId] | None, limit: int
    ) -> list[StatusView]:
        flt = dict(scope) if id_range is None else {**scope, self.id_field: id_range}
        cursor = (
            self.collection().find(flt, self._projection()).sort(self.id_field, -1).limit(limit)
        )
        return [
            StatusView(d[self.id_field], d["author"], d["text"], d["created_at"])
            async for d in cursor
        ]

    async def _count(self, scope: dict[str, Any], id_range: dict[str, ObjectId] | None) -> int:
        """How many items of `scope` lie in `id_range`, counting at most `max_items`: the
        database stops after that many index keys, so the cost is bounded like a page's."""
        flt = dict(scope) if id_range is None else {**scope, self.id_field: id_range}
        if self.count_hint is None:
            return await self.collection().count_documents(flt, limit=self.max_items)
        return await self.collection().count_documents(
            flt, limit=self.max_items, hint=self.count_hint
        )

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        """How many items of the timeline (its `max_items` newest) are newer than `after` (all of
        them when None), at most `max_items`. The newer items are a prefix of the timeline, so
        capping the count of every newer item in `scope` gives exactly that."""
        scope = await self.scope(user_id)
        return await self._count(scope, None if after is None else {"$gt": after})

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        return PageQuery(
            self.collection(),
            await self.scope(user_id),
            [(self.id_field, -1)],
            min(limit, self.max_items),
            self._projection(),
        )

    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        """A page of the timeline. Items beyond the `max_items` newest are never returned."""
        scope = await self.scope(user_id)
        cap = self.max_items
        if after is not None:
            # Refresh: the newest items above `after`; a gap if more arrived than fit.
            items = await self._find(scope, {"$gt": after}, min(limit + 1, cap))
            gap = len(items) > limit
            return Page(items[:limit], has_older=gap, gap=gap)
        remaining = cap
        id_range = None
        if before is not None:
            # Items at or above the cursor use up part of the TIMELINE_MAX window.
            above = await self._count(scope, {"$gte": before})
            remaining = cap - above
            if remaining <= 0:
                return Page([], has_older=False, gap=False)
            id_range = {"$lt": before}
        fetch = min(limit + 1, remaining)
        items = await self._find(scope, id_range, fetch)
        return Page(items[:limit], has_older=len(items) > limit, gap=False)

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        """The whole materialized timeline (what reads serve), newest first: for checks."""
        items = await self._find(await self.scope(user_id), None, self.max_items)
        return [item.id for item in items]
