"""Queries over the source of truth (`statuses`) that several strategies share."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app.storage.chunks import chunked
from app.storage.store import Collection
from app.strategies.contract import StatusView


async def window_floor(
    statuses: Collection, author_id: ObjectId, max_items: int
) -> ObjectId | None:
    """The id of the author's `max_items`-th newest status, or None if there are fewer.

    Statuses older than this can be in nobody's timeline: every reader who may see the author
    already has `max_items` newer statuses of theirs. That is what bounds backfills."""
    cursor = (
        statuses.find({"author_id": author_id}, {"_id": 1})
        .sort("_id", -1)
        .skip(max_items - 1)
        .limit(1)
    )
    docs = await cursor.to_list()
    return docs[0]["_id"] if docs else None


async def newest_statuses(
    statuses: Collection, author_id: ObjectId, limit: int
) -> list[dict[str, Any]]:
    cursor = statuses.find({"author_id": author_id}, {"audience": 0}).sort("_id", -1).limit(limit)
    return await cursor.to_list()


# Authors per query of the ground truth. The embedded server's `$in` costs time growing with the
# square of the list (500 values 0.56 s, 5,000 values 73 s: README "Known limits"), so a
# 2,500-friend reader's truth took ~14 s as one query and ~0.6 s as chunks of 100; mongod merges
# the per-author index scans of an `$in` only up to 200 values, so chunks help it too.
TRUTH_AUTHORS_PER_QUERY = 100


async def truth_timeline(
    statuses: Collection, user_id: ObjectId, friends: list[ObjectId], max_items: int
) -> list[dict[str, Any]]:
    """The ground truth: the fan-out-on-read answer for `user_id`, newest first. Each chunk of
    authors gives its `max_items` newest; the newest `max_items` of their union are the answer."""
    authors = [user_id, *friends]
    found: list[dict[str, Any]] = []
    for chunk in chunked(authors, TRUTH_AUTHORS_PER_QUERY):
        cursor = (
            statuses.find({"author_id": {"$in": chunk}}, {"audience": 0})
            .sort("_id", -1)
            .limit(max_items)
        )
        found.extend(await cursor.to_list())
    found.sort(key=lambda s: s["_id"], reverse=True)
    return found[:max_items]


async def hydrate(statuses: Collection, ids: list[ObjectId]) -> list[StatusView]:
    """The statuses of `ids` (at most a page's: one `_id $in` query), in that order. One that is
    gone (its delete event is on its way to the derived data) is left out. Pages that keep ids
    only (inbox_buckets, the benchmark's Redis peer) are filled by this."""
    cursor = statuses.find({"_id": {"$in": ids}}, {"author": 1, "text": 1, "created_at": 1})
    found = {d["_id"]: d async for d in cursor}
    return [
        StatusView(i, found[i]["author"], found[i]["text"], found[i]["created_at"])
        for i in ids
        if i in found
    ]


def window_misses_none(
    shown_ids: list[ObjectId],
    truth: list[dict[str, Any]],
    unfinished: set[ObjectId] | frozenset[ObjectId],
    cap: int,
) -> bool:
    """Whether a materialized window (`shown_ids`, newest first) leaves out no status of the
    `truth` that belongs in it: each one missing, and not still on its way (`unfinished`), must
    sit below `cap` newer shown entries. The settled check of a materialized timeline's
    rebuild (app.strategies.materialized)."""
    present = set(shown_ids)
    for status in truth:
        sid = status["_id"]
        if sid in present or sid in unfinished:
            continue
        if sum(1 for i in shown_ids if i > sid) < cap:
            return False
    return True
