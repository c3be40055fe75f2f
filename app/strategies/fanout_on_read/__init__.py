"""fan-out-on-read: each status is stored once; a page is one query over `(author_id, _id)`
with `$in` over the reader and the reader's current friends, sorted and limited by the database.

Writes cost nothing extra and friendship changes are free; reads pay instead. On mongod the
planner merges one index scan per `$in` value (SORT_MERGE, up to 200 values: the
`internalQueryMaxScansToExplode` default), so a page examines about `limit` keys per value; with
more friends than that it falls back to a blocking in-memory sort of every matching key.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.domain.graph import Graph
from app.storage.db import Session
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery
from app.strategies.paging import Documents, count_newer, read_page, timeline_ids

# Hinted: unhinted, SecantusDB planned the count over `$in` authors as a scan of every status
# (app.strategies.paging.Documents).
COUNT_HINT = [("author_id", 1), ("_id", -1)]


class FanoutOnRead:
    """No derived data: every write hook and handler is a no-op, and a page reads the truth."""

    name = "fanout_on_read"
    reads_truth = True  # a delete or an unfriend shows in the very next page

    def __init__(self, collab: Collaborators) -> None:
        self.max_items = collab.max_items
        self.graph: Graph = collab.graph
        self.pages = Documents(collab.statuses, "_id", collab.max_items, count_hint=COUNT_HINT)

    async def _scope(self, user_id: ObjectId) -> dict[str, Any]:
        authors = [user_id, *await self.graph.friend_ids(user_id)]
        return {"author_id": {"$in": authors}}

    async def ensure_indexes(self) -> None:
        """`(author_id, _id)` is on the Status model."""

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        """The status itself is the author's timeline entry."""

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        """Gone from `statuses` is gone from every timeline."""

    async def after_post(self, status: dict[str, Any]) -> None:
        """Nothing to do after the commit."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """Nothing to do after the commit."""

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Nothing derived to reach."""

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        """Nothing derived to remove."""

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        """Pages read the friendships themselves."""

    async def rebuild(self, user_id: ObjectId) -> int:
        return 0

    async def rebuild_author(self, user_id: ObjectId) -> int:
        return 0

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return 0

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

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        return self.pages.first_page_query(await self._scope(user_id), limit)

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        return await timeline_ids(self.pages, await self._scope(user_id), self.max_items)


def build(collab: Collaborators) -> FanoutOnRead:
    return FanoutOnRead(collab)
