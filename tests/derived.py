"""What the strategies derive, read from their own collections: for tests that must check the
service's state rather than the test's bookkeeping of what it asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from app.storage.store import Store
from app.strategies.inbox_buckets.chain import is_loose

# Every collection some strategy derives from the source of truth (statuses carry audiences
# under recipients_embedded): a repeated handler must change none of them.
DERIVED_COLLECTIONS = [
    "statuses",
    "timeline_entries",
    "timeline_meta",
    "audience_watermarks",
    "inbox_buckets",
    "hybrid_entries",
    "hybrid_meta",
    "large_authors",
    "large_friends",
]
# The strategies whose fan-out skips readers away longer than TIMELINE_ACTIVE_DAYS
# (TimelineStrategy._active): those look at activity while they fan out.
SKIPS_AWAY = ("receiver_copies", "inbox_buckets", "hybrid")


async def dump(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Every derived document, ids included, in id order."""
    return {
        name: await getattr(store, name).find({}).sort("_id", 1).to_list()
        for name in DERIVED_COLLECTIONS
    }


async def holders(store: Store, strategy: str, status_id: ObjectId) -> list[ObjectId] | None:
    """The readers whose materialized timeline holds `status_id`, once per copy (a reader twice
    is a duplicate), sorted; None for fanout_on_read, which materializes nothing."""
    if strategy in ("receiver_copies", "hybrid"):
        coll = store.timeline_entries if strategy == "receiver_copies" else store.hybrid_entries
        return sorted([d["owner_id"] async for d in coll.find({"status_id": status_id})])
    if strategy == "inbox_buckets":
        # A loose entry (not folded yet) of a status the owner's chain holds too is one copy:
        # reads and the fold merge the two (app/strategies/inbox_buckets/loose.py).
        chained: list[ObjectId] = []
        loose: set[ObjectId] = set()
        async for bucket in store.inbox_buckets.find({"items.s": status_id}):
            if is_loose(bucket):
                if "gone" not in bucket:
                    loose.add(bucket["owner_id"])
                continue
            chained += [bucket["owner_id"] for i in bucket["items"] if i["s"] == status_id]
        return sorted(chained + [o for o in loose if o not in chained])
    if strategy == "recipients_embedded":
        status = await store.statuses.find_one({"_id": status_id}, {"audience": 1})
        return sorted((status or {}).get("audience") or [])
    return None


async def large_authors(store: Store) -> dict[ObjectId, str]:
    """The authors hybrid treats as large-audience, with their state (`large`, or `ascending`
    / `descending` while crossing), as its `large_authors` collection says."""
    return {d["_id"]: d["state"] async for d in store.large_authors.find({}, {"state": 1})}


@dataclass
class Crossings:
    """Which authors hybrid saw cross its threshold, up and down, from its own collections:
    call `observe` after each drain (a state settled by the worker); an author crosses up when
    observed `large` after being observed not large, and down the other way round."""

    up: set[ObjectId] = field(default_factory=set)
    down: set[ObjectId] = field(default_factory=set)
    _large: set[ObjectId] = field(default_factory=set)
    _small: set[ObjectId] = field(default_factory=set)

    async def observe(self, store: Store, authors: list[ObjectId]) -> None:
        """Record the state of `authors` (every user who may cross) now."""
        states = await large_authors(store)
        for author in authors:
            large = states.get(author) == "large"
            if large and author in self._small:
                self.up.add(author)
            if not large and author in self._large:
                self.down.add(author)
            (self._large if large else self._small).add(author)
