"""inbox_buckets: entries carry what a page shows (`n` handle, `t` text, `c` created_at) beside
`s` and `a`, so that a page is its one or two buckets (docs/design.md, "inbox_buckets").

Forward fills the fields into the entries written before (ids only), bucket by bucket: each is
read, its bare entries looked up in `statuses` (100 ids per query: the embedded server's `$in`
cost grows with the square of the list), and written back on the condition that its version `v`
has not moved (a worker writing meanwhile wins; the bucket is read again, up to
FILL_ATTEMPTS times, and left as it is after that). An entry whose status is gone stays bare:
pages leave it out and its delete event removes it. Pages hydrate bare entries, so the service
runs correctly before, during and after this migration; it only makes their pages one round
trip. Buckets above MAX_ENTRIES entries (written under an INBOX_BUCKET_SIZE above today's bound)
are left bare: filled, one could pass MongoDB's 16 MB document limit; they are re-cut as they
are next written. Running it again fills what is still bare.

Backward changes nothing: the previous version reads `s` and `a` only and ignores the rest.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "inbox_buckets"
# Frozen copy of app.settings.MAX_INBOX_BUCKET_SIZE when this was written.
MAX_ENTRIES = 500
# Status ids per `$in` look-up.
IDS_PER_QUERY = 100
# Bucket ids read per batch of the scan.
SCAN_BATCH = 1000
# Reads of one bucket before a busy one is left for a later run.
FILL_ATTEMPTS = 5
BARE = {"items": {"$elemMatch": {"t": {"$exists": False}}}}


class InboxBucket(Document):
    class Settings:
        name = COLLECTION


async def _page_fields(db: AsyncDatabase[Any], ids: list[ObjectId]) -> dict[ObjectId, Any]:
    found: dict[ObjectId, Any] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        cursor = db["statuses"].find(
            {"_id": {"$in": ids[start : start + IDS_PER_QUERY]}},
            {"author": 1, "text": 1, "created_at": 1},
        )
        found.update({d["_id"]: d async for d in cursor})
    return found


async def _fill_one(db: AsyncDatabase[Any], bucket_id: Any) -> bool:
    coll = db[COLLECTION]
    for _ in range(FILL_ATTEMPTS):
        doc = await coll.find_one({"_id": bucket_id})
        if doc is None or len(doc["items"]) > MAX_ENTRIES:
            return False
        found = await _page_fields(db, [i["s"] for i in doc["items"] if "t" not in i])
        if not found:
            return False  # only entries of gone statuses are bare: nothing to fill
        items = [
            i if "t" in i or i["s"] not in found else _filled(i, found[i["s"]])
            for i in doc["items"]
        ]
        same = {"_id": bucket_id, "v": doc.get("v", 0)}
        result = await coll.update_one(same, {"$set": {"items": items}, "$inc": {"v": 1}})
        if result.modified_count == 1:
            return True
    return False


def _filled(item: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**item, "n": status["author"], "t": status["text"], "c": status["created_at"]}


async def fill_page_fields(db: AsyncDatabase[Any]) -> int:
    """Fill the bare entries of every bucket; returns how many buckets were rewritten."""
    filled = 0
    after: Any = None
    while True:
        flt = BARE if after is None else {**BARE, "_id": {"$gt": after}}
        batch = await db[COLLECTION].find(flt, {"_id": 1}).sort("_id", 1).to_list(SCAN_BATCH)
        if not batch:
            return filled
        for doc in batch:
            filled += await _fill_one(db, doc["_id"])
        after = batch[-1]["_id"]


class Forward:
    @free_fall_migration(document_models=[InboxBucket])
    async def fill_inbox_page_fields(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): one bucket at a time, each write
        # conditional on the bucket's version, while workers may be writing.
        await fill_page_fields(InboxBucket.get_pymongo_collection().database)


class Backward:
    @free_fall_migration(document_models=[InboxBucket])
    async def keep_inbox_page_fields(self, session: Any) -> None:
        """Nothing to undo (see the module's docstring)."""
