"""The pieces of inbox_buckets' bucket chains (buckets.py) that need no database:
the id bounds, entries, and an owner's chain as read at one moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from app.strategies.contract import Contention, StatusView

MIN_ID = ObjectId("000000000000000000000000")
MAX_ID = ObjectId("ffffffffffffffffffffffff")
# Rounds of read-the-chain-then-write-conditionally before `place` gives up: a round only fails
# when a concurrent change of the same owner's buckets landed between its read and its write,
# and each retry re-reads; past this many the event is retried later as contention.
PLACE_ATTEMPTS = 16
# The filter a write adds so that it never changes a sealed bucket: one being merged into the
# bucket above it, whose entries must stay as they were when it was sealed (buckets.py).
UNSEALED = {"sealed": {"$exists": False}}
# Loose entries (buckets.py, "Loose entries"): a fan-out inserts one document per receiver in
# the head's index range, {owner_id, hi: MAX_ID, s: status id, items: [entry]}; the head itself
# carries s = MAX_ID, so it sorts first in that range and the unique (owner_id, hi, s) index
# keeps one head and one loose document per status. Lower buckets carry no `s` (null in the
# index: still one per (owner_id, hi)).
HEAD_S = MAX_ID


def head_filter(owner: ObjectId) -> dict[str, Any]:
    """The filter of the owner's head alone: its `_id` is the owner's (`_id` first: the embedded
    server then looks it up by id); loose documents have ids of their own."""
    return {"_id": owner, "owner_id": owner, "hi": MAX_ID}


def loose_range(owner: ObjectId) -> dict[str, Any]:
    """The filter of the owner's loose documents (live ones and tombstones)."""
    return {"owner_id": owner, "hi": MAX_ID, "s": {"$lt": HEAD_S}}


def is_loose(doc: Mapping[str, Any]) -> bool:
    """Whether a document of the collection is a loose entry (or its tombstone), not a bucket."""
    return doc.get("hi") == MAX_ID and doc.get("s", HEAD_S) != HEAD_S


# {"s": status id, "a": author id, "n": author handle, "t": text, "c": created_at}: the page's
# fields travel with the entry, so that a page is its one or two buckets and nothing else
# (statuses never change once posted). Entries written before they carried them hold "s" and
# "a" only; pages hydrate those (InboxBuckets._views).
Entry = dict[str, Any]


def entry(status: Mapping[str, Any]) -> Entry:
    """The entry of a status document."""
    return {
        "s": status["_id"],
        "a": status["author_id"],
        "n": status["author"],
        "t": status["text"],
        "c": status["created_at"],
    }


def view(item: Entry) -> StatusView | None:
    """What a page shows of an entry; None for one that carries ids only."""
    if "t" not in item:
        return None
    return StatusView(item["s"], item["n"], item["t"], item["c"])


class Conflict(Contention):
    """Concurrent changes to one owner's buckets kept winning; the worker retries later."""


@dataclass
class Chain:
    """An owner's buckets as read at one moment: the chain from the head down, and buckets no
    longer (or not yet) reachable from it (a split interrupted by a crash or a conflict)."""

    buckets: list[dict[str, Any]]
    orphans: list[dict[str, Any]]
    #: the owner's loose documents, live ones and tombstones (`gone`), newest first
    loose: list[dict[str, Any]] = field(default_factory=list)

    def ids(self) -> list[ObjectId]:
        return [i["s"] for b in self.buckets for i in b["items"]]

    def ids_items(self) -> list[Entry]:
        """The chain's entries, newest first (loose ones not included)."""
        return [i for b in self.buckets for i in b["items"]]

    def by_author(self, author_id: ObjectId) -> set[ObjectId]:
        return {i["s"] for b in self.buckets for i in b["items"] if i["a"] == author_id}

    def around(self, orphan: dict[str, Any]) -> dict[str, Any] | None:
        """The parent of a lower part written before parts named theirs (`p`): the chain
        bucket whose range holds its `hi`."""
        return next((b for b in self.buckets if b["lo"] < orphan["hi"] < b["hi"]), None)

    def covering(self, status_id: ObjectId) -> dict[str, Any]:
        """The chain bucket whose range holds `status_id` (the last one for anything older)."""
        for bucket in self.buckets:
            if bucket["lo"] <= status_id:
                return bucket
        return self.buckets[-1]


def half(size: int) -> int:
    """The entries every bucket of a chain but the head and the last one holds at least (after
    any change has finished): half a bucket, rounded up."""
    return (size + 1) // 2


def chunks(items: list[Entry], size: int) -> list[list[Entry]]:
    """`items` (newest first) cut into buckets of `size` from the oldest up, so that every
    bucket but the newest is full; the newest is topped up from the one below it to at least
    half a bucket, so that every part holds that much (the chain's bound,
    buckets.py) and a first page of fewer items is one bucket read, not
    two (a head split at `size` + 1 leaves it half)."""
    out: list[list[Entry]] = []
    end = len(items)
    while end > size:
        out.append(items[end - size : end])
        end -= size
    out.append(items[:end])
    out.reverse()  # newest chunk first
    keep = min(len(items), half(size))
    if len(out) > 1 and len(out[0]) < keep:
        moved = keep - len(out[0])
        out[0], out[1] = out[0] + out[1][:moved], out[1][moved:]
    return out
