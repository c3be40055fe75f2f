"""Paging over layouts that keep one document per timeline item (statuses themselves,
receiver_copies' entries, hybrid's entries side): a page is one indexed, sorted and limited
query over a reader's `scope`, and counts are bounded by TIMELINE_MAX keys.

`read_page` and `count_newer` work over any `Items` (a find and a count over one scope); the
`Documents` items are the plain one-query kind, and hybrid's merge composes one of them with its
large friends' statuses (app/strategies/hybrid/merge.py). Layouts that keep several items per
document (inbox_buckets' bucket chains) page their own way.
"""

from __future__ import annotations

from typing import Any, Protocol

from bson import ObjectId

from app.storage.store import Collection
from app.strategies.contract import PAGE_PROJECTION_FIELDS, Page, PageQuery, Prelude, StatusView

IdRange = dict[str, ObjectId]


class Items(Protocol):
    """The items of a scope (a reader's whole timeline, unbounded by TIMELINE_MAX)."""

    async def find(
        self, scope: dict[str, Any], id_range: IdRange | None, limit: int
    ) -> list[StatusView]:
        """Up to `limit` items of `scope` in `id_range`, newest first."""
        ...

    async def count(self, scope: dict[str, Any], id_range: IdRange | None) -> int:
        """How many items of `scope` lie in `id_range`, counting at most TIMELINE_MAX."""
        ...


class Documents:
    """One document per item in `collection`, the status id in `id_field`."""

    def __init__(
        self,
        collection: Collection,
        id_field: str,
        max_items: int,
        *,
        count_hint: list[tuple[str, int]] | None = None,
    ) -> None:
        self.collection = collection
        self.id_field = id_field
        self.max_items = max_items
        # The index counts are hinted to, or None: unhinted, where every field of the count's
        # filter is in the page's index, so that the planner takes it anyway. A hint is no free
        # insurance: SecantusDB executes a hinted query by walking the *whole* hinted index and
        # decoding every document it points to (an unread count among 10,000 copies took 692 ms
        # hinted, 18 ms without; docs/benchmarks.md, "Where the time goes at saturation"). Only
        # fanout_on_read hints (unhinted, SecantusDB planned its count over `$in` authors as a
        # scan of every status).
        self.count_hint = count_hint

    def projection(self) -> dict[str, int]:
        return {self.id_field: 1, **dict.fromkeys(PAGE_PROJECTION_FIELDS, 1)}

    def _filter(self, scope: dict[str, Any], id_range: IdRange | None) -> dict[str, Any]:
        return dict(scope) if id_range is None else {**scope, self.id_field: id_range}

    async def find(
        self, scope: dict[str, Any], id_range: IdRange | None, limit: int
    ) -> list[StatusView]:
        cursor = (
            self.collection.find(self._filter(scope, id_range), self.projection())
            .sort(self.id_field, -1)
            .limit(limit)
        )
        return [self._view(d) async for d in cursor]

    async def find_with(
        self, prelude: Prelude, scope: dict[str, Any], id_range: IdRange | None, limit: int
    ) -> tuple[list[StatusView], list[Any]]:
        """`find`, and the `_id`s of the prelude's records, in one command: the page's query (the
        same filter, sort, limit and projection, so the same index) as an aggregate, with the
        records as its `$unionWith`. Not the other way round: SecantusDB plans a `$unionWith`
        sub-pipeline without the index (a page among 2,200 entries cost its server 31 ms so,
        6.7 ms as the outer pipeline). Records come back as `{record: _id}`, a field no page
        document has."""
        cursor = await self.collection.aggregate(
            [
                {"$match": self._filter(scope, id_range)},
                {"$sort": {self.id_field: -1}},
                {"$limit": limit},
                {"$project": self.projection()},
                {
                    "$unionWith": {
                        "coll": prelude.collection.name,
                        "pipeline": [
                            {"$match": prelude.filter},
                            {"$limit": prelude.limit},
                            {"$project": {"_id": 0, "record": "$_id"}},
                        ],
                    }
                },
            ]
        )
        views: list[StatusView] = []
        records: list[Any] = []
        async for d in cursor:
            if "record" in d:
                records.append(d["record"])
            else:
                views.append(self._view(d))
        return views, records

    def _view(self, d: dict[str, Any]) -> StatusView:
        return StatusView(d[self.id_field], d["author"], d["text"], d["created_at"])

    async def count(self, scope: dict[str, Any], id_range: IdRange | None) -> int:
        """The database stops after `max_items` index keys, so the cost is bounded like a
        page's."""
        flt = self._filter(scope, id_range)
        if self.count_hint is None:
            return await self.collection.count_documents(flt, limit=self.max_items)
        return await self.collection.count_documents(
            flt, limit=self.max_items, hint=self.count_hint
        )

    def first_page_query(self, scope: dict[str, Any], limit: int) -> PageQuery:
        return PageQuery(
            self.collection,
            scope,
            [(self.id_field, -1)],
            min(limit, self.max_items),
            self.projection(),
        )


async def read_page(
    items: Items,
    scope: dict[str, Any],
    max_items: int,
    *,
    limit: int,
    before: ObjectId | None = None,
    after: ObjectId | None = None,
) -> Page:
    """A page of the timeline `scope` selects; items beyond the `max_items` newest are never
    returned."""
    if before is None:
        found = await items.find(scope, _newer(after), min(limit + 1, max_items))
        return _newest(found, limit, after)
    # Items at or above the cursor use up part of the TIMELINE_MAX window.
    above = await items.count(scope, {"$gte": before})
    remaining = max_items - above
    if remaining <= 0:
        return Page([], has_older=False, gap=False)
    found = await items.find(scope, {"$lt": before}, min(limit + 1, remaining))
    return Page(found[:limit], has_older=len(found) > limit, gap=False)


async def read_newest_with(
    items: Documents,
    prelude: Prelude,
    scope: dict[str, Any],
    max_items: int,
    *,
    limit: int,
    after: ObjectId | None,
) -> tuple[Page, list[Any]]:
    """`read_page`'s first page or refresh (`after`), and the prelude's record ids, in one
    command (`Documents.find_with`)."""
    found, records = await items.find_with(prelude, scope, _newer(after), min(limit + 1, max_items))
    return _newest(found, limit, after), records


def _newer(after: ObjectId | None) -> IdRange | None:
    return None if after is None else {"$gt": after}


def _newest(found: list[StatusView], limit: int, after: ObjectId | None) -> Page:
    """A first page, or a refresh (the newest items above `after`: a gap if more arrived than
    fit), from the newest `limit` + 1 items of the range."""
    more = len(found) > limit
    return Page(found[:limit], has_older=more, gap=after is not None and more)


async def count_newer(items: Items, scope: dict[str, Any], after: ObjectId | None) -> int:
    """How many items of the timeline (its TIMELINE_MAX newest) are newer than `after`. The
    newer items are a prefix of the timeline, so capping the count of every newer item in
    `scope` gives exactly that."""
    return await items.count(scope, None if after is None else {"$gt": after})


async def timeline_ids(items: Items, scope: dict[str, Any], max_items: int) -> list[ObjectId]:
    return [item.id for item in await items.find(scope, None, max_items)]
