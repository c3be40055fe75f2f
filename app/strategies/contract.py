"""The timeline strategy contract, and the values it speaks in.

A strategy owns the *derived* data that makes `GET /timeline` fast (nothing, audiences, or
materialized timelines). The source of truth is always the `statuses` and `friendships`
collections. Every strategy must present the same timeline once its events are applied:

    timeline(U) = the TIMELINE_MAX newest statuses (by id) that exist and whose author is U or a
                  current friend of U, newest first.

Event handlers (`apply_*`) are called by the fanout worker, possibly more than once and in any
order relative to events of *other* authors; events of one author are applied one at a time.
Each handler reconciles towards the current source of truth rather than replaying a delta, so a
repeated or late event changes nothing that is already right.

The contract is a Protocol: a strategy is any class with these methods (each strategy package
under app/strategies/ holds one, built by its registration in app/strategies/__init__.py).
Shared behaviour is composed, not inherited: one-document-per-item paging is a helper
(app.strategies.paging), and the fan-out, refills and rebuilds of materialized timelines are one
component (app.strategies.materialized) over a per-family storage layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from app.storage.db import Session

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
    # (app.domain.timeline_reads) whose items were all hidden still continues past them.
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


@dataclass(frozen=True)
class Prelude:
    """Records of another collection that a page's read brings back in the same command: the
    removals that may touch the page (app.domain.timeline_reads). `filter` selects them, at most
    `limit` are returned (the caller asks for one more than it can use)."""

    collection: AsyncCollection[Any]
    filter: dict[str, Any]
    limit: int


@runtime_checkable
class ReadsWithPrelude(Protocol):
    """A strategy whose first page and refresh are one query can read a `Prelude` with it, in
    one round trip instead of two (an aggregate over the prelude's collection with the page's
    query as its `$unionWith`). Optional: pages of other strategies read the records first, in
    their own query."""

    async def read_with(
        self, prelude: Prelude, user_id: ObjectId, *, limit: int, after: ObjectId | None
    ) -> tuple[Page, list[Any]]:
        """`read(user_id, limit=limit, after=after)` and the `_id`s of the prelude's records,
        from one command."""
        ...


class TimelineStrategy(Protocol):
    #: the registered name (TIMELINE_STRATEGY)
    name: str
    #: TIMELINE_MAX: a timeline is its author's and friends' `max_items` newest statuses
    max_items: int
    #: pages are read from the source of truth (statuses and friendships) at read time, so a
    #: removal shows at once and needs no check (app.domain.timeline_reads)
    reads_truth: bool

    # -- set-up --------------------------------------------------------------------------------
    async def ensure_indexes(self) -> None:
        """Create indexes only this strategy needs (shared ones are on the Beanie models)."""

    # -- synchronous part of writes, inside the API's transaction ------------------------------
    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Called before `status` is inserted: may add fields (e.g. its audience)."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """Called after `status` is inserted. Must make it visible to its author at once,
        unless `after_post` does."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """Called after `status` is deleted. Must remove it from its author's timeline at once,
        unless `after_delete` does."""

    # -- after the API's transaction committed, before the reply -------------------------------
    # For derived writes that cannot run inside the transaction (inbox_buckets). Each must be
    # idempotent and must leave nothing wrong if the process dies before it runs: the change's
    # event reaches the author's own timeline too.
    async def after_post(self, status: dict[str, Any]) -> None:
        """Called once `status` is committed."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """Called once the delete of `status` is committed."""

    # -- worker handlers -----------------------------------------------------------------------
    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Make status `status_id` reach the current friends of its author (if it still exists)."""

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Make the (already deleted) status leave every timeline, keeping each one full."""

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        """Reconcile what `other_id` sees of `author_id`'s statuses with whether they are friends
        *now*: backfill the author's newest statuses, or remove all of them."""

    async def rebuild(self, user_id: ObjectId) -> int:
        """Recompute the derived data owned by `user_id` from the source of truth. Returns the
        number of documents changed. Idempotent."""

    async def rebuild_author(self, user_id: ObjectId) -> int:
        """Recompute the derived data that follows from `user_id` as an author rather than as
        a reader (hybrid: which side of its threshold the author is on). Called only under the
        author's lease (their events, `timeline rebuild`, a switch). Idempotent."""

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        """Recompute the derived data that serves `user_id`'s reads from the source of truth
        (a returning inactive user, app.domain.activity). Idempotent, so a repeated or resumed
        rebuild converges. Only strategies that skip inactive receivers have any to do."""

    # -- reading -------------------------------------------------------------------------------
    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        """A page of the timeline, newest first: below `before`, or the newest above `after`
        (`gap` when more arrived than `limit`). Items beyond the `max_items` newest are never
        returned."""

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        """How many items of the timeline are newer than `after` (all when None), at most
        `max_items`, at a cost bounded like a page's."""

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        """The query a first page sends (the benchmark explains and times it)."""

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        """The whole materialized timeline (what reads serve), newest first: for checks."""
