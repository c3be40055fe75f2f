"""per-receiver copies (fan-out-on-write): one entry per (owner, status) in `timeline_entries`,
carrying what a page shows, so a page is one query over the unique `(owner_id, status_id)` index.

Cost model: a post costs one entry insert per active receiver, in unordered bulk inserts of
FANOUT_BATCH (app.strategies.materialized), plus a trim on about one insert in TRIM_EVERY; a page
is one indexed query of `limit` + 1 entries, whatever the friend count. A trimmed timeline that
loses entries to an unfriend or a delete is refilled from the source of truth, so it never shows
fewer than it should. The fan-out, refills and rebuilds are the materialized-timeline machinery
over the entries layout (entries.py).
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.storage.db import Session
from app.storage.shard_plan import ShardPlan
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery, Prelude
from app.strategies.materialized import MaterializedTimelines
from app.strategies.paging import (
    Documents,
    count_newer,
    read_newest_with,
    read_page,
    timeline_ids,
)
from app.strategies.receiver_copies.entries import Entries

ENTRIES = "timeline_entries"
META = "timeline_meta"
# How its collections spread over a cluster (app/storage/sharding.py, docs/scaling.md).
SHARDS = (
    ShardPlan(
        ENTRIES,
        (("owner_id", "hashed"),),
        "owner-local timelines: a page, a trim and a rebuild hit one shard",
    ),
    ShardPlan(META, (("owner_id", "hashed"),), "read beside the owner's entries"),
)


class ReceiverCopies:
    name = "receiver_copies"
    reads_truth = False

    def __init__(self, collab: Collaborators, entries: Entries) -> None:
        self.max_items = collab.max_items
        self.entries = entries
        self.timelines = MaterializedTimelines(entries, collab)
        self.pages = Documents(entries.entries, "status_id", collab.max_items)

    async def ensure_indexes(self) -> None:
        """Its indexes are on the Beanie models (app/storage/models_copies.py)."""

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
    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        scope = {"owner_id": user_id}
        return await read_page(
            self.pages, scope, self.max_items, limit=limit, before=before, after=after
        )

    async def read_with(
        self, prelude: Prelude, user_id: ObjectId, *, limit: int, after: ObjectId | None
    ) -> tuple[Page, list[Any]]:
        scope = {"owner_id": user_id}
        return await read_newest_with(
            self.pages, prelude, scope, self.max_items, limit=limit, after=after
        )

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        return await count_newer(self.pages, {"owner_id": user_id}, after)

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        return self.pages.first_page_query({"owner_id": user_id}, limit)

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return await timeline_ids(self.pages, {"owner_id": user_id}, self.max_items)


def build(collab: Collaborators) -> ReceiverCopies:
    entries = Entries(collab.collection(ENTRIES), collab.collection(META), collab.max_items)
    return ReceiverCopies(collab, entries)
