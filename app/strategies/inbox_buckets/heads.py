"""The fold's common case (fold.py): claimed loose entries into their owners' heads by one update
with an aggregation pipeline per batch of owners, each distinct entry sent once.

A post reaches each receiver as a loose document holding its entry, so a fold of the owners a
post reached claims the same entry once per owner; placing them owner by owner (`Inbox.place`)
sent it again once per owner, in that owner's `$push` (with a `$inc` of the head's `count`
before it): 2,695 bytes and 30.5 documents per post in the committed run, where the post itself
writes 2,154 bytes. Here the batch's distinct entries travel once, as a literal array in the
pipeline, and each owner names its entries by their index in that array (a few bytes each).

Each head is changed atomically by the pipeline, under the conditions of `Inbox._merge`'s push,
re-checked inside the pipeline against the head as it is when written (they commute with every
concurrent change of the chain, as the push's do): the head is not sealed, none of the entries it
takes is there already (a retried fold adds nothing), they all lie in its range (`lo` at most
their ids) and they fit (at most `size` entries in all). Its `count` is raised by what it took in
the same write, so it never under-states, and its version `v` moves on, so a split or a trim
that read the head before conflicts and re-reads. A head the conditions refuse is left as it
was; the caller reads the heads back and places whatever did not land with `Inbox.place`
(a split, a new head, a concurrent change): that is the general placement, idempotent as ever.

Not a `$merge` of the claimed documents into the heads (an aggregate whose `$merge` stage runs a
`whenMatched` pipeline on the head; MongoDB 4.4+ allows `$merge` into the collection aggregated),
which would send no entry at all: on the embedded SecantusDB (0.7.0b3) `$merge` reads the head,
then deletes it and inserts the replacement as separate storage steps (secantus/aggregate.py,
`_stage_merge`), so a concurrent write of the head in between is lost and a read in between
finds no head. Measured (docs/design.md, "The fold's writes"): 300 `$inc`s of a head beside
`$merge`s into it lost 64, and 55 reads found no head; the same race against pipeline updates
lost none and never missed the head. A lost `$pull` would bring back a removed entry without
its tombstone, and an upsert of a missing head would make the replacement's insert fail.

A head without room for an owner's entries is split first, on the server too (`room`): the
oldest part of its entries goes into a new lower bucket by an aggregate over the head whose
`$merge` only inserts (`whenNotMatched: "insert"`, on a new `_id`: no document is rewritten, so
the embedded server's `$merge` is as safe as an insert, the unique (owner_id, hi, s) index
refusing a second bucket at the same key), then the head is cut above it by a pipeline update
conditional on the version it was read at: the split protocol of `Inbox._merge` (lower part
first, named by its parent and the parent's version; an interrupted split leaves an orphan that
`Inbox._collect` deletes), without sending the entries either way. Where `$merge` cannot write
the collection (a sharded one: `$merge`'s `on` must hold the shard key, and the lower buckets
have no unique key that does), the split is left to `Inbox.place`, as everything else the heads
do not take.

Needs MongoDB 5.2+ (`$sortArray`) or the embedded server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure

from app.pipeline.checkpoint import fenced
from app.storage.store import Collection
from app.strategies.inbox_buckets.chain import MAX_ID, UNSEALED, Entry, half

# Entries (owner, status pairs) one head-filling update places at most: its literal array of
# distinct entries (~100-300 bytes each) stays well under the 16 MB command limit, and each head
# picks its own by index, so the per-head work is small on the embedded server too; a batch
# with more is sent as several updates.
FILL_ENTRIES = 500
# Temporary fields of the pipeline (unset by its last stage): the entries a head takes and
# whether they fit. No stored document has them.
FRESH = "_fold_new"
FITS = "_fold_fits"
# What the fold reads of a head: which entries it holds, its range and its count (never the
# entries' texts).
HEAD_FIELDS = {"items.s": 1, "lo": 1, "count": 1, "sealed": 1, "owner_id": 1, "v": 1}


def fits(head: Mapping[str, Any], items: Sequence[Entry], size: int) -> bool:
    """Whether `head` (read with HEAD_FIELDS) can take `items` in one write: unsealed, none
    of them there yet, all in its range, and room for all of them."""
    held = {i["s"] for i in head["items"]}
    return (
        "sealed" not in head
        and bool(items)
        and not any(i["s"] in held for i in items)
        and min(i["s"] for i in items) >= head["lo"]
        and len(held) + len(items) <= size
    )


def room(head: Mapping[str, Any], items: Sequence[Entry], size: int) -> ObjectId | None:
    """Where to cut `head` (read with HEAD_FIELDS) so that it can take `items` (none of them
    there yet, all in its range): the head's new `lo`, its oldest entry after the cut and the
    new entries; None when no cut does (then `Inbox.place` splits). The lower part is the
    oldest max(half a bucket, what does not fit) of the head's entries, all older than every
    new entry: each part then holds at least half a bucket, as `chunks` leaves them."""
    held: list[ObjectId] = sorted((i["s"] for i in head["items"]), reverse=True)
    new: list[ObjectId] = sorted((i["s"] for i in items), reverse=True)
    if "sealed" in head or not new or set(held) & set(new) or new[-1] < head["lo"]:
        return None
    lower = max(half(size), len(held) + len(new) - size)
    older = [s for s in held if s < new[-1]]
    if len(held) + len(new) <= size or lower > len(older):
        return None
    kept = held[: len(held) - lower]
    return min([*kept[-1:], new[-1]])


async def split(coll: Collection, head: Mapping[str, Any], cut: ObjectId) -> bool:
    """Cut `head` (read with HEAD_FIELDS) at `cut`, its entries below it going into a new
    lower bucket, on the server (module docstring); False if the head changed since it was
    read, or the server cannot (the caller places instead). Each step is conditional on the
    head's version: an insert whose cut fails is an orphan `Inbox._collect` deletes."""
    owner = head["owner_id"]
    as_read = {"_id": head["_id"], "owner_id": owner, "hi": MAX_ID, "v": head["v"], **UNSEALED}
    below = {"$filter": {"input": "$items", "as": "e", "cond": {"$lt": ["$$e.s", cut]}}}
    lower = {
        "_id": {"$literal": ObjectId()},
        "owner_id": 1,
        "hi": {"$literal": cut},
        "lo": 1,
        "items": below,
        "v": {"$literal": 0},
        "p": "$_id",
        "pv": "$v",
    }
    into = {"into": coll.name, "on": "_id", "whenMatched": "fail", "whenNotMatched": "insert"}
    try:
        async with fenced():
            await (
                await coll.aggregate([{"$match": as_read}, {"$project": lower}, {"$merge": into}])
            ).to_list()
    except DuplicateKeyError:  # another split of the head holds that key: `place` sorts it out
        return False
    except OperationFailure:  # `$merge` cannot write here (a sharded collection)
        return False
    above = {"$filter": {"input": "$items", "as": "e", "cond": {"$gte": ["$$e.s", cut]}}}
    cut_above = [{"$set": {"items": above, "lo": cut, "v": {"$add": ["$v", 1]}}}]
    async with fenced():
        result = await coll.update_one(as_read, cut_above)
    return result.modified_count == 1


def fill_pipeline(groups: Mapping[ObjectId, Sequence[Entry]], size: int) -> list[dict[str, Any]]:
    """The update pipeline that puts each owner's `groups[owner]` into its head, under the
    module's conditions (each head's own, re-checked as written). Entries are literals: a text
    starting with `$` is never read as a field path."""
    if_fits = _if_fits(f"${FITS}")
    fresh = f"${FRESH}"
    return [
        {"$set": {FRESH: _taken(groups)}},
        {"$set": {FITS: _fits(fresh, size)}},
        {
            "$set": {
                "items": if_fits(
                    {
                        "$sortArray": {
                            "input": {"$concatArrays": ["$items", fresh]},
                            "sortBy": {"s": -1},
                        }
                    },
                    "$items",
                ),
                "count": if_fits(
                    {"$add": [{"$ifNull": ["$count", 0]}, {"$size": fresh}]}, "$count"
                ),
                "v": if_fits({"$add": ["$v", 1]}, "$v"),
            }
        },
        {"$unset": [FRESH, FITS]},
    ]


def _taken(groups: Mapping[ObjectId, Sequence[Entry]]) -> dict[str, Any]:
    """The expression of the entries a head takes: the batch's distinct entries are one literal
    array, each owner's list names its own by index."""
    entries: list[Entry] = []
    index: dict[ObjectId, int] = {}
    mine = []
    for owner, items in groups.items():
        for item in items:
            if item["s"] not in index:
                index[item["s"]] = len(entries)
                entries.append(item)
        mine.append({"o": owner, "k": [index[i["s"]] for i in items]})
    own = {
        "$filter": {
            "input": {"$literal": mine},
            "as": "m",
            "cond": {"$eq": ["$$m.o", "$owner_id"]},
        }
    }
    return {
        "$map": {
            "input": {
                "$ifNull": [
                    {"$let": {"vars": {"m": {"$arrayElemAt": [own, 0]}}, "in": "$$m.k"}},
                    [],
                ]
            },
            "as": "k",
            "in": {"$arrayElemAt": [{"$literal": entries}, "$$k"]},
        }
    }


def _fits(fresh: str, size: int) -> dict[str, Any]:
    """The expression of `fits` for the entries at `fresh`, on the head as the server has it."""
    fresh_ids = _ids(fresh)
    return {
        "$and": [
            {"$eq": [{"$type": "$sealed"}, "missing"]},
            {"$gt": [{"$size": fresh}, 0]},
            {"$eq": [{"$size": {"$setIntersection": [fresh_ids, _ids("$items")]}}, 0]},
            {"$gte": [{"$min": fresh_ids}, "$lo"]},
            {"$lte": [{"$add": [{"$size": "$items"}, {"$size": fresh}]}, size]},
        ]
    }


def _if_fits(flag: str) -> Callable[[Any, Any], dict[str, Any]]:
    def choose(then: Any, otherwise: Any) -> dict[str, Any]:
        return {"$cond": [flag, then, otherwise]}

    return choose


def _ids(entries: str) -> dict[str, Any]:
    """The status ids of an array of entries. A `$map`, not the path `<array>.s`: the embedded
    server evaluates that path to nothing inside an expression (mongod to the array of ids)."""
    return {"$map": {"input": entries, "as": "e", "in": "$$e.s"}}


# Reads an owner's chain, finishes what interrupted splits and merges left (`Inbox._collect`,
# as every placement does first), and returns its head as it is then (None: no head).
Collect = Callable[[ObjectId], Awaitable[Mapping[str, Any] | None]]


async def _takes(
    coll: Collection,
    head: Mapping[str, Any],
    items: Sequence[Entry],
    size: int,
    collect: Collect,
) -> bool:
    """Whether `head` can take `items` in one write, once split on the server if it must. A
    split first collects the chain (an orphan of an interrupted split could hold the key the
    split's lower part needs), as `Inbox.place` does before any placement."""
    if fits(head, items, size):
        return True
    if room(head, items, size) is None:
        return False
    current = await collect(head["owner_id"])
    cut = room(current, items, size) if current is not None else None
    return current is not None and cut is not None and await split(coll, current, cut)


def heads_filter(owners: Sequence[ObjectId]) -> dict[str, Any]:
    """The heads of `owners` (`_id` first: the embedded server looks them up by id)."""
    listed = list(owners)
    return {"_id": {"$in": listed}, "owner_id": {"$in": listed}, "hi": MAX_ID}


async def read_heads(
    coll: Collection, owners: Sequence[ObjectId]
) -> dict[ObjectId, dict[str, Any]]:
    """The heads of `owners` (at most one `$in` list's worth), HEAD_FIELDS of each."""
    if not owners:
        return {}
    cursor = coll.find(heads_filter(owners), HEAD_FIELDS)
    return {d["_id"]: d async for d in cursor}


async def fill_heads(
    coll: Collection, size: int, groups: Mapping[ObjectId, Sequence[Entry]], collect: Collect
) -> dict[ObjectId, dict[str, Any]]:
    """Put each owner's `groups[owner]` into its head where it fits (the module's conditions,
    checked on a read of the heads, then again by the update itself); returns every owner's
    head as read afterwards (HEAD_FIELDS; an owner without a head is absent). Which entries
    landed is for the caller to see there. Idempotent: a repeated call changes nothing."""
    heads = await read_heads(coll, list(groups))
    ready: dict[ObjectId, Sequence[Entry]] = {}
    for owner, items in groups.items():
        head = heads.get(owner)
        if head is not None and await _takes(coll, head, items, size, collect):
            ready[owner] = items
    if not ready:
        return heads
    batch: dict[ObjectId, Sequence[Entry]] = {}
    batches = []
    for owner, items in ready.items():
        if batch and sum(len(i) for i in batch.values()) + len(items) > FILL_ENTRIES:
            batches.append(batch)
            batch = {}
        batch[owner] = items
    batches.append(batch)
    for group in batches:
        async with fenced():
            await coll.update_many(heads_filter(list(group)), fill_pipeline(group, size))
    return {**heads, **await read_heads(coll, list(ready))}
