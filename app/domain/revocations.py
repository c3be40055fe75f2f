"""Removals never lag: what a delete or an unfriend removed is hidden from every read at once.

Derived data (copies, buckets, audiences, hybrid's large-friend pairs) is brought up to date by
the worker, so once `DELETE /statuses/{id}` or `DELETE /friends/{handle}` has returned it may
still hold what was removed, for as long as the worker is behind, stopped, or has parked the
event as dead. So the removal also writes, in its own transaction (app.pipeline.outbox), a small
revocation record:

    s:<status id>                  the status was deleted
    f:<reader id>:<author handle>  the reader no longer sees the author's statuses

Reads of derived data (app.domain.timeline_reads) check their items against these records in one
query on `_id` (at most one key per item and one per author of the page: ≤ 2 × limit keys).
The event that carries a record's stamp (`revokes`) *settles* the record once every maintained
strategy has applied it (`settle`), and a settled record is deleted SETTLED_KEEP_S later, so the
collection holds only removals in flight or just applied and the check finds nothing almost
always. Why not delete it at once: a page is checked after it is read (the check needs its
items), so a record deleted between a page's read and its check, by a worker that applied the
removal just after the read, would let the page show what was removed. A settled record keeps
hiding for SETTLED_KEEP_S, and a page whose read and check took longer than CHECK_WITHIN_S
(app.domain.timeline_reads) is read again. Checks made *before* the read (the unread count's
`pending_for`) skip settled records: their removal had reached every timeline before the read.
A new friendship deletes the pair's settled records (`forget_friendship`): what they hide is
then visible again, at once. A record is keyed by the newest stamp it stands for
(`$max`): an older event (an unfriend, a re-friend, an unfriend again) never settles a newer
removal. Author handles are immutable and never reused (users are not deleted), so a handle
names one author for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from app.storage.chunks import chunked
from app.storage.db import Session
from app.storage.models import utcnow
from app.storage.store import Collection

STATUS_PREFIX = "s:"
FRIEND_PREFIX = "f:"
# The character after ':' in ASCII: `{"$gt": "f:<id>:", "$lt": "f:<id>;"}` is one reader's range.
_RANGE_END = ";"
# The unread count fetches a reader's candidate records at most this many at a time; beyond it
# (thousands of deletes in flight system-wide, say a stopped worker) it checks its items by key
# instead, in chunks, which is bounded by TIMELINE_MAX whatever is pending.
CANDIDATES_CAP = 1000
# How long a settled record is kept (module docstring): well above CHECK_WITHIN_S, the longest a
# page's read and check may take, so a record a page needs is always still there; short, as it
# keeps hiding a re-befriended author's statuses only until the friendship deletes it (a status
# record hides a status that is gone for good anyway).
SETTLED_KEEP_S = 10.0
# Keys per `$in` when items are checked in chunks: the embedded server's `$in` costs grow with
# the square of the list (README, "Known limits"), so long lists are split.
IN_CHUNK = 200


def status_key(status_id: ObjectId) -> str:
    return f"{STATUS_PREFIX}{status_id}"


def friend_key(reader_id: ObjectId, author_handle: str) -> str:
    return f"{FRIEND_PREFIX}{reader_id}:{author_handle}"


def stamped(event: dict[str, Any], key: str, rev: ObjectId) -> dict[str, Any]:
    """`event` carrying the record it settles."""
    return {**event, "revokes": rev, "revokes_key": key}


async def revoke(
    coll: Collection, stamps: Iterable[tuple[str, ObjectId]], *, session: Session
) -> None:
    """Write the records `(key, stamp)` within the removal's transaction (without transactions,
    before the removal itself: a record for a removal that then fails only hides until its
    staged event is dropped, never shows what was removed)."""
    for key, rev in stamps:
        # A settled record of an older removal of the same key (an unfriend after an unfriend
        # and a re-friend) is in flight again: unsettled, for the new event to settle.
        renewed = await coll.update_one(
            {"_id": key, "rev": {"$lt": rev}},
            {"$set": {"rev": rev}, "$unset": {"settled": "", "settled_by": "", "befriended": ""}},
            session=session,
        )
        if renewed.matched_count == 0:
            await coll.update_one(
                {"_id": key},
                {"$max": {"rev": rev}, "$setOnInsert": {"at": utcnow()}},
                upsert=True,
                session=session,
            )


async def settle(coll: Collection, event: Mapping[str, Any]) -> None:
    """After every maintained strategy applied `event` (or its change was found never to have
    landed): mark the record it stands for settled, by the server's clock, unless a newer
    removal renewed it; and delete the records settled more than SETTLED_KEEP_S before, by the
    same clock (one range delete on the `settled` index, almost always of nothing or a few)."""
    rev, key = event.get("revokes"), event.get("revokes_key")
    if rev is None or key is None:
        return
    marked = await coll.find_one_and_update(
        {"_id": key, "rev": {"$lte": rev}, "settled": {"$exists": False}},
        {"$currentDate": {"settled": True}, "$set": {"settled_by": ObjectId()}},
        projection={"settled": 1, "befriended": 1},
        return_document=ReturnDocument.AFTER,
    )
    if marked is None:
        return
    if marked.get("befriended"):
        # A friendship made again since: nothing is left to hide (`forget_friendship`). Looked at
        # after the mark, not before it: a friendship made between a look before and the mark
        # found the record unsettled (so flagged it, not deleted it), and the record then stayed
        # settled, hiding the friend's statuses until another removal's settle swept it
        # (tests/test_concurrent_clients.py, a fresh-clone run on 2026-12-07: a reader's whole
        # timeline, one friend's three statuses, hidden after the drain). A friendship made
        # after the mark finds the record settled and deletes it itself.
        await coll.delete_one({"_id": key, "rev": {"$lte": rev}, "befriended": True})
        return
    cutoff = marked["settled"] - timedelta(seconds=SETTLED_KEEP_S)
    await coll.delete_many({"settled": {"$lt": cutoff}})


async def withdraw(coll: Collection, event: Mapping[str, Any]) -> None:
    """The removal of `event` never happened (its staged event is dropped): delete the record at
    once, unless a newer removal renewed it. Nothing left derived data, so no page read before
    this can have been missing anything, and nothing needs to stay hidden."""
    rev, key = event.get("revokes"), event.get("revokes_key")
    if rev is not None and key is not None:
        await coll.delete_one({"_id": key, "rev": {"$lte": rev}})


async def forget_friendship(coll: Collection, keys: Iterable[str], *, session: Session) -> None:
    """A new friendship's part (within its transaction): the pair's friendship records go as
    soon as nothing is left to hide. A settled one is deleted now (it would otherwise hide each
    side from the other for up to SETTLED_KEEP_S more); one still in flight (the unfriend not
    yet applied) keeps hiding until its event settles it, which then deletes it at once instead
    of keeping it (`befriended`). A page read while the two friendships overlap it may show
    either state."""
    ids = sorted(keys)
    await coll.delete_many({"_id": {"$in": ids}, "settled": {"$exists": True}}, session=session)
    await coll.update_many({"_id": {"$in": ids}}, {"$set": {"befriended": True}}, session=session)


@dataclass(frozen=True)
class Item:
    """What the check needs of a timeline item."""

    id: ObjectId
    author: str


async def hidden(coll: Collection, reader_id: ObjectId, items: Iterable[Item]) -> set[ObjectId]:
    """The ids of `items` that a removal took from `reader_id`'s timeline: one query, a key per
    item and per author."""
    items = list(items)
    if not items:
        return set()
    found = await _existing(coll, _keys(reader_id, items))
    return _revoked(reader_id, items, found)


async def hidden_many(coll: Collection, reader_id: ObjectId, items: list[Item]) -> set[ObjectId]:
    """`hidden` for more items than a page (the unread count's slow path), in chunks."""
    out: set[ObjectId] = set()
    for chunk in chunked(items, IN_CHUNK // 2):
        out |= await hidden(coll, reader_id, chunk)
    return out


@dataclass(frozen=True)
class Pending:
    """The records that may touch one reader's items newer than a point."""

    keys: set[str]
    complete: bool  # False: more than CANDIDATES_CAP; check the items by key instead

    @classmethod
    def of(cls, ids: list[str], cap: int) -> Pending:
        """From a query limited to `cap` + 1 records."""
        return cls(set(ids[:cap]), len(ids) <= cap)

    def hides(self, reader_id: ObjectId, item: Item) -> bool:
        return bool(
            status_key(item.id) in self.keys or friend_key(reader_id, item.author) in self.keys
        )


async def pending_for(
    coll: Collection,
    reader_id: ObjectId,
    after: ObjectId | None,
    *,
    before: ObjectId | None = None,
    cap: int = CANDIDATES_CAP,
) -> Pending:
    """The reader's own friendship records and the status records between `after` and `before`
    (status ids grow with time, so their keys sort as the ids do), not yet settled: one query
    on two ranges of `_id`, usually answering none, at most `cap` keys (else `complete` is
    False). For a check made *before* the items are read: a record settled by then had its
    removal applied to every timeline before the read."""
    flt = {**ranges_for(reader_id, after, before), "settled": {"$exists": False}}
    docs = await coll.find(flt, {"_id": 1}).limit(cap + 1).to_list()
    return Pending.of([d["_id"] for d in docs], cap)


def ranges_for(
    reader_id: ObjectId, after: ObjectId | None, before: ObjectId | None
) -> dict[str, Any]:
    """The filter of every record that may touch the reader's items between `after` and
    `before`, settled or not: the reader's friendship records and the status records of that
    id range (status ids grow with time, so their keys sort as the ids do)."""
    mine = f"{FRIEND_PREFIX}{reader_id}:"
    newer = STATUS_PREFIX if after is None else status_key(after)
    older = STATUS_PREFIX[:-1] + _RANGE_END if before is None else status_key(before)
    return {
        "$or": [
            {"_id": {"$gt": mine, "$lt": f"{FRIEND_PREFIX}{reader_id}{_RANGE_END}"}},
            {"_id": {"$gt": newer, "$lt": older}},
        ]
    }


def _keys(reader_id: ObjectId, items: list[Item]) -> list[str]:
    keys = {status_key(i.id) for i in items}
    keys |= {friend_key(reader_id, i.author) for i in items}
    return sorted(keys)


async def _existing(coll: Collection, keys: list[str]) -> set[str]:
    docs = await coll.find({"_id": {"$in": keys}}, {"_id": 1}).to_list()
    return {d["_id"] for d in docs}


def _revoked(reader_id: ObjectId, items: list[Item], found: set[str]) -> set[ObjectId]:
    if not found:
        return set()
    return {
        i.id for i in items if status_key(i.id) in found or friend_key(reader_id, i.author) in found
    }
