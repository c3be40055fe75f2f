"""inbox_buckets: loose entries in the head's index range (docs/design.md, "inbox_buckets").

A fan-out now inserts one loose document per receiver, {owner_id, hi: MAX_ID, s: status id,
items: [entry]}, which a fold moves into the chain later. The head carries s = MAX_ID, lower
buckets no `s`; the unique chain index becomes (owner_id, hi, s) and the fold pass scans a new
(hi, s) index (frozen copy of app/storage/models.py's `InboxBucket` indexes).

Forward, on data of the previous layout (heads without `s`, no loose documents): sets
s = MAX_ID on every head (every document with hi = MAX_ID is a head then), creates the two new
indexes, then drops the old unique (owner_id, hi) index, which would refuse a second document
at (owner, MAX_ID). The new unique index holds on the old data (one head per owner, lower
buckets unique per (owner_id, hi) with a null `s`). Run before the new version starts; running
it again changes nothing.

Backward carries loose entries back into the chains the previous version reads: each live
loose entry is pushed into the bucket whose range holds it (the head for a timeline that has
none yet), if not there already, and the head's `count` raised; tombstones go (their statuses
were removed from the chains). A bucket left over INBOX_BUCKET_SIZE is split by the previous
version's next placement in it (its `_recut`), and a timeline over TIMELINE_MAX is cut by its
next trim. Then `s` is unset on heads, the old unique index is created and the new ones
dropped. Stop the new version's workers first: a fan-out inserting loose entries meanwhile
would leave some behind.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

COLLECTION = "inbox_buckets"
MAX_ID = ObjectId("ffffffffffffffffffffffff")
MIN_ID = ObjectId("000000000000000000000000")
OLD_CHAIN_INDEX = "owner_id_1_hi_1"
NEW_INDEXES = [
    IndexModel(
        [("owner_id", ASCENDING), ("hi", ASCENDING), ("s", ASCENDING)],
        unique=True,
        name="owner_id_1_hi_1_s_1",
    ),
    IndexModel([("hi", ASCENDING), ("s", ASCENDING)], name="hi_1_s_1"),
]
# Loose documents read per batch of the backward scan.
SCAN_BATCH = 1000


class InboxBucket(Document):
    class Settings:
        name = COLLECTION


async def _drop(db: AsyncDatabase[Any], name: str) -> None:
    try:
        await db[COLLECTION].drop_index(name)
    except OperationFailure:
        pass  # not there: dropped by an earlier run


async def forward(db: AsyncDatabase[Any]) -> int:
    """Move the collection to the loose-entries layout; returns how many heads got `s`."""
    coll = db[COLLECTION]
    marked = await coll.update_many(
        {"hi": MAX_ID, "s": {"$exists": False}}, {"$set": {"s": MAX_ID}}
    )
    await coll.create_indexes(NEW_INDEXES)
    await _drop(db, OLD_CHAIN_INDEX)
    return marked.modified_count


async def _carry_back(coll: Any, doc: dict[str, Any]) -> None:
    owner, item = doc["owner_id"], doc["items"][0]
    covering = await coll.find(
        {"owner_id": owner, "hi": {"$gt": item["s"]}, "lo": {"$lte": item["s"]}}
    ).to_list()
    if not covering:
        head = {"_id": owner, "owner_id": owner, "hi": MAX_ID, "lo": MIN_ID, "v": 0}
        await coll.update_one(
            {"_id": owner}, {"$setOnInsert": {**head, "items": [], "count": 0}}, upsert=True
        )
        covering = [{"_id": owner, "hi": MAX_ID}]
    # The chain's bucket is the one with the highest `hi` (an interrupted split's copy lies
    # inside its parent's range).
    bucket = max(covering, key=lambda b: b["hi"])
    pushed = await coll.update_one(
        {"_id": bucket["_id"], "items.s": {"$ne": item["s"]}},
        {"$push": {"items": {"$each": [item], "$sort": {"s": -1}}}, "$inc": {"v": 1}},
    )
    if pushed.modified_count:
        await coll.update_one({"_id": owner}, {"$inc": {"count": 1}})


async def backward(db: AsyncDatabase[Any]) -> int:
    """Carry loose entries back into the chains and restore the previous indexes; returns how
    many live loose entries were carried."""
    coll = db[COLLECTION]
    carried = 0
    loose = {"hi": MAX_ID, "s": {"$lt": MAX_ID}}
    while True:
        batch = await coll.find(loose).sort([("_id", 1)]).to_list(SCAN_BATCH)
        if not batch:
            break
        for doc in batch:
            if "gone" not in doc and doc.get("items"):
                await _carry_back(coll, doc)
                carried += 1
            await coll.delete_one({"_id": doc["_id"]})
    await coll.update_many({"hi": MAX_ID}, {"$unset": {"s": ""}})
    await coll.create_indexes(
        [IndexModel([("owner_id", ASCENDING), ("hi", ASCENDING)], unique=True)]
    )
    for index in NEW_INDEXES:
        await _drop(db, index.document["name"])
    return carried


class Forward:
    @free_fall_migration(document_models=[InboxBucket])
    async def inbox_loose_entries(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): index builds cannot run in one.
        await forward(InboxBucket.get_pymongo_collection().database)


class Backward:
    @free_fall_migration(document_models=[InboxBucket])
    async def inbox_chain_only(self, session: Any) -> None:
        await backward(InboxBucket.get_pymongo_collection().database)
