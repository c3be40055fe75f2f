"""hybrid's read side: the statuses of a reader's large-audience friends, merged into the page
read from the reader's materialized entries.

A page is the newest items of two disjoint sets: the reader's entries whose author is *not* one
of their large-audience friends (their copies are ignored, whatever is left of them), and those
friends' statuses in `statuses`. Each side is read newest first with the page's limit, so the
newest `limit` of the union are the newest `limit` of the two answers together; counts add up
the same way. Cost, first page (docs/design.md, "hybrid"): one query for the reader's pairs, one
over their entries, and one per LARGE_AUTHORS_PER_QUERY large friends over `(author_id, _id)`.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.storage.chunks import chunked
from app.storage.store import Collection
from app.strategies.contract import PAGE_PROJECTION_FIELDS, StatusView
from app.strategies.paging import Documents, IdRange

# Large friends per query of their statuses. The embedded server's `$in` costs time growing with
# the square of the list (app.strategies.truth.TRUTH_AUTHORS_PER_QUERY, same measurement), and
# mongod merges the per-author index scans of an `$in` only up to 200 values; so 50 large
# friends are one query, and a reader with 500 of them costs 5, not 500.
LARGE_AUTHORS_PER_QUERY = 100
STATUS_INDEX = [("author_id", 1), ("_id", -1)]
ENTRIES_INDEX = [("owner_id", 1), ("status_id", -1)]
_PROJECTION = {"_id": 1, **dict.fromkeys(PAGE_PROJECTION_FIELDS, 1)}


def large_of(scope: dict[str, Any]) -> list[ObjectId]:
    """The large-audience friends a hybrid scope leaves out of the entries (Hybrid._scope)."""
    author = scope.get("author_id")
    return list(author["$nin"]) if isinstance(author, dict) else []


def _above(id_range: dict[str, ObjectId] | None, floor: ObjectId | None) -> dict[str, ObjectId]:
    """`id_range` narrowed to ids above `floor`."""
    out = dict(id_range or {})
    if floor is not None:
        out["$gt"] = max(out.get("$gt", floor), floor)
    return out


async def entries_page(
    entries: Collection,
    scope: dict[str, Any],
    id_range: dict[str, ObjectId] | None,
    limit: int,
) -> list[StatusView]:
    """The newest `limit` entries of `scope` (an owner's entries but those of their large
    friends) in `id_range`.

    Read first without the authors' `$nin`, which costs twice the plain page on the embedded
    server (its plan for the extra field is a blocking sort): a large friend's copies are
    old ones left from before they crossed the threshold, rarely among the newest. Only when
    some were dropped from a full answer is the page read again with the `$nin`."""
    flt: dict[str, Any] = {"owner_id": scope["owner_id"]}
    if id_range:
        flt["status_id"] = id_range
    projection = {"status_id": 1, "author_id": 1, **dict.fromkeys(PAGE_PROJECTION_FIELDS, 1)}
    raw = await entries.find(flt, projection).sort("status_id", -1).limit(limit).to_list()
    large = set(large_of(scope))
    kept = [d for d in raw if d["author_id"] not in large]
    if len(kept) < len(raw) and len(raw) == limit:
        # Hinted: the embedded server scans the whole collection for the `$nin` otherwise.
        cursor = entries.find({**flt, "author_id": scope["author_id"]}, projection)
        cursor = cursor.sort("status_id", -1).limit(limit).hint(ENTRIES_INDEX)
        kept = await cursor.to_list()
    return [StatusView(d["status_id"], d["author"], d["text"], d["created_at"]) for d in kept]


async def merge_find(
    statuses: Collection,
    large: list[ObjectId],
    materialized: list[StatusView],
    id_range: dict[str, ObjectId] | None,
    limit: int,
) -> list[StatusView]:
    """The newest `limit` items of `materialized` (the entries side, already read with the
    same range and limit) and of the large friends' statuses in `id_range`.

    When the entries side filled its limit, nothing older than its last item can make the
    page, so the statuses are read above it only: on the embedded server, which decodes every
    matching document before it sorts, that bounds the read by the reader's recent traffic
    instead of the large friends' whole history."""
    floor = materialized[-1].id if len(materialized) >= limit else None
    flt_range = _above(id_range, floor)
    found = list(materialized)
    for chunk in chunked(large, LARGE_AUTHORS_PER_QUERY):
        flt: dict[str, Any] = {"author_id": {"$in": chunk}}
        if flt_range:
            flt["_id"] = flt_range
        cursor = statuses.find(flt, _PROJECTION).sort("_id", -1).limit(limit)
        found += [
            StatusView(d["_id"], d["author"], d["text"], d["created_at"]) async for d in cursor
        ]
    found.sort(key=lambda s: s.id, reverse=True)
    return found[:limit]


async def merge_count(
    statuses: Collection,
    large: list[ObjectId],
    counted: int,
    id_range: dict[str, ObjectId] | None,
    cap: int,
) -> int:
    """`counted` (the entries side's count in `id_range`) plus the large friends' statuses in
    it, at most `cap`: each query stops after the keys still needed to reach it."""
    total = counted
    for chunk in chunked(large, LARGE_AUTHORS_PER_QUERY):
        if total >= cap:
            break
        flt: dict[str, Any] = {"author_id": {"$in": chunk}}
        if id_range:
            flt["_id"] = id_range
        total += await statuses.count_documents(flt, limit=cap - total, hint=STATUS_INDEX)
    return min(total, cap)


class MergedItems:
    """hybrid's items (app.strategies.paging.Items): the entries side, and where the scope
    leaves large friends out, their statuses merged in."""

    def __init__(self, entries: Documents, statuses: Collection, max_items: int) -> None:
        self.entries = entries
        self.statuses = statuses
        self.max_items = max_items

    async def find(
        self, scope: dict[str, Any], id_range: IdRange | None, limit: int
    ) -> list[StatusView]:
        large = large_of(scope)
        if not large:
            return await self.entries.find(scope, id_range, limit)
        page = await entries_page(self.entries.collection, scope, id_range, limit)
        return await merge_find(self.statuses, large, page, id_range, limit)

    async def count(self, scope: dict[str, Any], id_range: IdRange | None) -> int:
        counted = await self.entries.count(scope, id_range)
        large = large_of(scope)
        if not large:
            return counted
        return await merge_count(self.statuses, large, counted, id_range, self.max_items)
