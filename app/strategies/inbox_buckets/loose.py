"""Loose entries of inbox_buckets: what a fan-out writes (one insert per receiver), in the head's
index range, until a fold moves them into the chain (fold.py, buckets.py "Loose entries").

A loose document is {owner_id, hi: MAX_ID, s: status id, items: [entry]}; the unique
(owner_id, hi, s) index makes a repeated insert of the same (owner, status) a duplicate, which a
retried fan-out ignores. Two optional fields carry the fold/removal protocol:
- `folding`: the token (an ObjectId: its time is the claim's) of the fold that claimed it;
- `gone`: a removal took its status out of the owner's timeline (an ObjectId: its time is the
  removal's). The document stays as a *tombstone* while a fold may still have the entry in
  flight: reads hide every entry (chain or loose) whose status has a tombstone, and the fold
  that claimed it pulls the entry from the chain before deleting it.
"""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.pipeline.checkpoint import fenced
from app.storage.store import Collection
from app.strategies.inbox_buckets.chain import HEAD_S, MAX_ID, MIN_ID, Entry, loose_range

# Loose entries a page reads beside the head, in the same query (the first page's bound): the
# head and LOOSE_READ + 1 loose documents (the one more says whether any lie below). 64 is more
# than a reader gets between two fold passes unless over a hundred of their friends post within
# FOLD_AGE_S (fanout/fold.py); a page that needs what lies below them reads the rest in a
# second query, and a read that meets more asks the fold pass to fold the owner at its next
# pass (FOLD_REQUEST_S), so pages are back within the bound within FOLD_INTERVAL_S. Each loose
# document is one entry (~300 B with the text), so 65 of them read ~20 KB, a third of a
# 50-entry bucket's worth more than the head alone.
LOOSE_READ = 64
# The `s` of an owner's fold request: a loose document without an entry that a read which met
# more than LOOSE_READ loose entries inserts, so that the fold pass (which scans loose documents
# oldest `s` first) folds that owner at its next pass whatever their age. The smallest id: one
# per owner (the unique index), first in the pass's scan, last in the owner's range.
FOLD_REQUEST_S = MIN_ID
# How long a process remembers the fold requests it made: the reads of a crowded owner until the
# pass has folded it (a pass every FOLD_INTERVAL_S, 5 s) do not insert theirs again (a round trip
# each). A request lost meanwhile (folded, then crowded again) is made again after this long.
FOLD_REQUEST_MEMORY_S = 10.0
# Owners remembered at most (then forgotten all at once): the memory stays small.
FOLD_REQUEST_MEMORY_SIZE = 10_000
# Mongo's duplicate key error: a retried fan-out's insert of a loose entry that is there.
DUPLICATE_KEY = 11000


# The previous layout's unique chain index, which refuses loose entries.
OLD_CHAIN_INDEX = "owner_id_1_hi_1"
OUTDATED = (
    "inbox_buckets: the collection still has the previous layout's unique (owner_id, hi) "
    "index, which refuses loose entries; run `timeline migrate` "
    "(migrations/20261206180000_inbox_loose_entries.py)"
)


class LayoutOutdated(RuntimeError):
    """The inbox collection is of the previous layout: `timeline migrate` has not run."""


async def check_layout(coll: Collection) -> None:
    """Refuse to write loose entries into a collection of the previous layout."""
    names = {i["name"] async for i in await coll.list_indexes()}
    if OLD_CHAIN_INDEX in names:
        raise LayoutOutdated(OUTDATED)


def loose_doc(owner: ObjectId, item: Entry) -> dict[str, Any]:
    return {"owner_id": owner, "hi": MAX_ID, "s": item["s"], "items": [item]}


class Loose:
    """The loose documents of one inbox collection."""

    def __init__(self, coll: Collection) -> None:
        self.coll = coll
        # owner -> when this process last asked for a fold (time.monotonic())
        self._requested: dict[ObjectId, float] = {}

    async def insert(self, owners: list[ObjectId], item: Entry) -> int:
        """One loose `item` per owner, one unordered bulk insert; the owners that hold it loose
        already (a retry) are skipped. Returns how many were inserted."""
        if not owners:
            return 0
        docs = [loose_doc(o, item) for o in owners]
        try:
            async with fenced():
                result = await self.coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            refused = [docs[e["index"]]["owner_id"] for e in errors]
            await self._held(refused, item)
            return int(exc.details.get("nInserted", len(owners) - len(errors)))
        return len(result.inserted_ids)

    async def _held(self, owners: list[ObjectId], item: Entry) -> None:
        """Check that each of `owners` refused `item` because it holds it loose (a retry), not
        because of another unique index: the previous layout's (owner_id, hi), before
        `timeline migrate` (which would drop every delivery silently)."""
        flt = {"owner_id": {"$in": owners}, "hi": MAX_ID, "s": item["s"]}
        held = {d["owner_id"] async for d in self.coll.find(flt, {"owner_id": 1})}
        if len(held) < len(set(owners)):
            raise LayoutOutdated(OUTDATED)

    async def top(
        self, owner: ObjectId, fields: dict[str, int] | None = None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The owner's head and its newest LOOSE_READ + 1 loose documents (tombstones
        included), newest first: one query, one index range."""
        cursor = (
            self.coll.find({"owner_id": owner, "hi": MAX_ID}, fields)
            .sort([("s", -1)])
            .limit(LOOSE_READ + 2)
        )
        docs = await cursor.to_list()
        if docs and docs[0].get("s", HEAD_S) == HEAD_S and docs[0]["_id"] == owner:
            return docs[0], docs[1:]
        return None, docs[: LOOSE_READ + 1]

    async def below(
        self,
        owner: ObjectId,
        s: ObjectId,
        fields: dict[str, int] | None = None,
        *,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        """The loose documents of the owner below status `s` (all, or the newest `limit`),
        newest first (the rare read past LOOSE_READ, a fold's batch)."""
        flt = {"owner_id": owner, "hi": MAX_ID, "s": {"$lt": s}}
        return await self.coll.find(flt, fields).sort([("s", -1)]).limit(limit).to_list()

    async def all(self, owner: ObjectId) -> list[dict[str, Any]]:
        return await self.below(owner, HEAD_S)

    async def request_fold(self, owner: ObjectId) -> None:
        """Ask the fold pass to fold the owner at its next pass (FOLD_REQUEST_S); once is
        enough: a request already there is left as it is, and one this process made within
        FOLD_REQUEST_MEMORY_S is not sent again."""
        now = time.monotonic()
        if now - self._requested.get(owner, -FOLD_REQUEST_MEMORY_S) < FOLD_REQUEST_MEMORY_S:
            return
        if len(self._requested) >= FOLD_REQUEST_MEMORY_SIZE:
            self._requested.clear()
        self._requested[owner] = now
        request = {"owner_id": owner, "hi": MAX_ID, "s": FOLD_REQUEST_S, "items": []}
        try:
            async with fenced():
                await self.coll.insert_one(request)
        except DuplicateKeyError:
            pass

    async def mark_gone(self, owner: ObjectId, which: dict[str, Any]) -> None:
        """Step (a) of a removal: tombstone the owner's loose documents matching `which`. A
        document already marked keeps its first mark (its time says how long it has waited)."""
        flt = {**loose_range(owner), **which, "gone": {"$exists": False}}
        async with fenced():
            await self.coll.update_many(flt, {"$set": {"gone": ObjectId()}})

    async def bury(self, owner: ObjectId, which: dict[str, Any]) -> None:
        """Step (c) of a removal: delete the tombstones matching `which` that no fold claimed
        (a claimed one is its fold's to delete, after it pulled the entry from the chain)."""
        flt = {
            **loose_range(owner),
            **which,
            "gone": {"$exists": True},
            "folding": {"$exists": False},
        }
        async with fenced():
            await self.coll.delete_many(flt)


def merge(items: list[Entry], loose: list[dict[str, Any]]) -> list[Entry]:
    """The entries of `items` (chain entries) and of the live documents of `loose`, each status
    once, newest first, without any status that has a tombstone in `loose`."""
    gone = {d["s"] for d in loose if "gone" in d}
    by_s: dict[ObjectId, Entry] = {}
    for item in items:
        by_s.setdefault(item["s"], item)
    for doc in loose:
        if "gone" not in doc and doc["items"]:
            by_s.setdefault(doc["s"], doc["items"][0])
    kept = [i for s, i in by_s.items() if s not in gone]
    kept.sort(key=lambda i: i["s"], reverse=True)
    return kept
