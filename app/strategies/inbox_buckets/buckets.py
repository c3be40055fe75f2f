"""The bucket chains behind inbox_buckets: an owner's timeline as a chain of bucket documents,
plus loose entries not folded into it yet.

Each bucket of `inbox_buckets` holds the entries (`s` status id, `a` author id and the page's
fields, chain.py) whose status ids lie in its range [lo, hi), newest first,
never more than `size` of them:
- the head has `_id` = the owner's id, hi = MAX_ID and s = MAX_ID; it also carries the owner's
  bookkeeping: `count` (an upper bound of the entries of the chain, see below), `trimmed` and
  `owed` (the refill duties, as receiver_copies' timeline_meta);
- the bucket below bucket B is the one with hi == B.lo and no `s` (unique index
  (owner_id, hi, s)): a reader walks the chain newest first by point look-ups, one document
  each, and a `before` cursor finds its bucket through the multikey (items.s, owner_id) index.
  The last bucket has lo = MIN_ID.

Loose entries (loose.py). A fan-out does not write buckets: it inserts one document per
receiver, {owner_id, hi: MAX_ID, s: status id, items: [entry]}, in unordered bulk inserts (a
retry's duplicates fail on the unique index and are skipped). On the embedded server an insert
costs ~0.05 ms where an update of a head rewrites the whole bucket (0.76 ms at 50 entries), and
mongod writes one new document per insert either way. Head and loose entries are one range of
the chain index, head first by `s` descending: a page reads the head and the newest
LOOSE_READ + 1 loose entries in one query and merges them (each status once: a fold may have
copied an entry before deleting its loose document). The visible timeline is the TIMELINE_MAX
newest of (chain + loose entries - tombstoned statuses). A fold (fold.py) moves loose entries
into the chain, off the post's path (the worker pool's fold pass, fanout/fold.py: entries older
than FOLD_AGE_S, and first the owners whose reads met more than LOOSE_READ): into the heads with
room by one pipeline update per batch, full heads split on the server first (heads.py,
`fill_heads`), the rest with `place`.

The removal protocol (a delete, an unfriend, a rebuild's removals), for status S of owner O:
(a) O's loose document of S, if any, is marked `gone` (a tombstone; it stays); (b) S is removed
from the chain as below; (c) the tombstone is deleted unless a fold has claimed it (`folding`),
in which case that fold pulls S from the chain after its own placement and then deletes it.
Reads hide every entry whose status has a tombstone, so a fold that placed S after (b) never
shows it: once a removal has returned, no read shows S, whatever the folds do.

Chain writes:
- `place` reads the chain and writes each bucket it changes with a condition on that bucket's
  version `v`, splitting a bucket that would exceed `size` (the lower part is inserted first,
  then the bucket is cut above it: a crash between leaves an unreachable copy, which the next
  `place` deletes), and retries on a conflict; entries that fit are pushed under conditions
  that commute with concurrent pushes;
- a removal that leaves a bucket (not the head) under half full merges it into the bucket above
  it (`_compact`): the bucket is sealed (no write changes it any more), then the bucket
  above takes its entries and its range in one write (readers go from it to the bucket below),
  then the sealed copy is deleted, and a bucket left past `size` is split. Any `place` or
  removal that meets a sealed bucket finishes the merge (`_collect`), so a crash leaves none.
  Every split leaves each part at least half full (`chunks`), so every bucket but the head and
  the last one holds at least half a bucket once a change has finished: a chain has at most
  ceil(TIMELINE_MAX / (size / 2)) + 2 documents and a page of up to half a bucket reads two.

`count` only ever over-states the chain: it is raised before entries are placed and lowered
only by entries this process removed itself. The trim that follows a placement (the caller's)
keeps the chain at TIMELINE_MAX once a change has finished.

Removals from the chain (one status, any set of entries: an unfriended author's, what a
rebuild finds wrong, the trim to TIMELINE_MAX) change each bucket with a condition on its
version, and the head's `count` is lowered only by what was removed here, so it keeps
over-stating, never under-stating. After a removal the chain is compacted (`_compact`), so that
whatever was removed a chain holds at most ceil(TIMELINE_MAX / ceil(size / 2)) + 2 documents and
a page reads its first bucket and at most ceil((limit + 1) / ceil(size / 2)) more (one for a
page of up to half a bucket).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.errors import DuplicateKeyError
from pymongo.results import UpdateResult

from app.pipeline.checkpoint import fenced
from app.storage.db import Session
from app.storage.store import Collection
from app.strategies.inbox_buckets.chain import (
    HEAD_S,
    MAX_ID,
    MIN_ID,
    PLACE_ATTEMPTS,
    UNSEALED,
    Chain,
    Conflict,
    Entry,
    chunks,
    half,
    head_filter,
    is_loose,
)
from app.strategies.inbox_buckets.heads import fill_heads
from app.strategies.inbox_buckets.loose import Loose

T = TypeVar("T")


class Inbox:
    """The bucket chains of one `inbox_buckets` collection: reading, placing and removing
    entries, merging and trimming."""

    def __init__(self, coll: Collection, size: int, cap: int) -> None:
        self.coll = coll
        self.size = size
        self.cap = cap
        self.loose = Loose(coll)

    async def _update_one(
        self, flt: dict[str, Any], update: dict[str, Any], session: Session
    ) -> UpdateResult:
        return await self._write(session, lambda s: self.coll.update_one(flt, update, session=s))

    async def _write(self, session: Session, write: Callable[[Session], Awaitable[T]]) -> T:
        """A derived-data write, fenced (app.pipeline.checkpoint)."""
        async with fenced():
            return await write(session)

    # -- reading -------------------------------------------------------------------------------
    async def bucket(
        self, owner: ObjectId, hi: ObjectId, fields: dict[str, int] | None = None
    ) -> dict[str, Any] | None:
        """The owner's bucket whose range ends at `hi`, whole or only `fields` (a projection)."""
        flt = head_filter(owner) if hi == MAX_ID else {"owner_id": owner, "hi": hi}
        return await self.coll.find_one(flt, fields)

    async def holder(self, owner: ObjectId, status_id: ObjectId) -> dict[str, Any] | None:
        """The chain bucket holding `status_id`. An interrupted split's copy may hold it too;
        the copy lies inside the range of the bucket it was cut from (which still holds the
        entry), so the candidate with the highest `hi` is the chain's. Not always: a lower
        part cut from a head whose older entries were merged in can lie below the head's range
        while that split is in flight; it is then the only holder until the cut links it."""
        found = await self.coll.find({"items.s": status_id, "owner_id": owner}).to_list()
        found = [b for b in found if not is_loose(b)]
        return max(found, key=lambda b: b["hi"]) if found else None

    async def chain(self, owner: ObjectId, *, session: Session = None) -> Chain:
        everything = await self.coll.find({"owner_id": owner}, session=session).to_list()
        loose = sorted((d for d in everything if is_loose(d)), key=lambda d: d["s"], reverse=True)
        docs = [d for d in everything if not is_loose(d)]
        by_hi = {d["hi"]: d for d in docs}
        buckets: list[dict[str, Any]] = []
        current = by_hi.get(MAX_ID)
        while current is not None:
            buckets.append(current)
            current = by_hi.get(current["lo"]) if current["lo"] < current["hi"] else None
        on_chain = {id(b) for b in buckets}
        return Chain(buckets, [d for d in docs if id(d) not in on_chain], loose)

    # -- the fold's common case ----------------------------------------------------------------
    async def fill_heads(
        self, groups: dict[ObjectId, list[Entry]]
    ) -> dict[ObjectId, dict[str, Any]]:
        """Each owner's `groups[owner]` into its head where it has room (heads.py: one update per
        batch, each distinct entry sent once); returns the heads as read afterwards (the
        entries' ids, `lo`, `count`). What did not land is for `place`."""
        return await fill_heads(self.coll, self.size, groups, self._collected_head)

    async def _collected_head(self, owner: ObjectId) -> dict[str, Any] | None:
        """The owner's head once what interrupted splits and merges left is finished."""
        chain = await self.chain(owner)
        if await self._collect(chain, None):
            chain = await self.chain(owner)
        return chain.buckets[0] if chain.buckets else None

    # -- the general placement -----------------------------------------------------------------
    async def place(self, owner: ObjectId, items: list[Entry], *, session: Session = None) -> int:
        """Put `items` (any order, any age) in the owner's chain, each once; what would fall
        below the `cap` newest is left out, but the caller trims (`InboxRemovals.trim`).
        Returns how many were new."""
        placed = 0
        for _ in range(PLACE_ATTEMPTS):
            chain = await self.chain(owner, session=session)
            if await self._collect(chain, session):
                chain = await self.chain(owner, session=session)
            done, finished = await self._place_once(owner, chain, items, session)
            placed += done
            if finished:
                return placed
        raise Conflict(f"the buckets of {owner} kept changing")

    async def _place_once(
        self, owner: ObjectId, chain: Chain, items: list[Entry], session: Session
    ) -> tuple[int, bool]:
        """One round: (entries placed, whether all are in). A round that meets a concurrent
        change of a bucket stops there; the next one re-reads the chain."""
        present = set(chain.ids())
        new = {i["s"]: i for i in items if i["s"] not in present}
        every = sorted(present | set(new), reverse=True)
        if len(every) > self.cap:  # what falls below the window is not placed at all
            if chain.buckets and not chain.buckets[0].get("trimmed"):
                # Cut off as by a trim: later removals must refill. Marked before the look
                # that sets the cut (the next round's), as `trim` does.
                await self.mark_trimmed(owner, session=session)
                return 0, False
            floor = every[self.cap - 1]
            new = {s: i for s, i in new.items() if s >= floor}
        if not new:
            return 0, await self._recut(owner, chain, session)
        if not chain.buckets:
            return await self._create(owner, list(new.values()), session), False
        await self._count(owner, len(new), session)  # first: `count` never under-states
        groups: dict[ObjectId, list[Entry]] = {}
        for item in new.values():
            groups.setdefault(chain.covering(item["s"])["hi"], []).append(item)
        placed = 0
        for bucket in chain.buckets:
            add = groups.get(bucket["hi"])
            if not add:
                continue
            if not await self._merge(owner, bucket, add, session):
                await self._count(owner, placed - len(new), session)  # give back the rest
                return placed, False
            placed += len(add)
        return placed, True

    async def _recut(self, owner: ObjectId, chain: Chain, session: Session) -> bool:
        """Split buckets holding more than `size` entries (written under a larger
        INBOX_BUCKET_SIZE); False if a concurrent change got in the way."""
        for bucket in chain.buckets:
            if len(bucket["items"]) > self.size and not await self._merge(
                owner, bucket, [], session
            ):
                return False
        return True

    async def _count(self, owner: ObjectId, delta: int, session: Session) -> None:
        if delta:
            await self._write(
                session,
                lambda s: self.coll.update_one(
                    {"_id": owner, "owner_id": owner, "hi": MAX_ID},
                    {"$inc": {"count": delta}},
                    session=s,
                ),
            )

    async def _create(self, owner: ObjectId, items: list[Entry], session: Session) -> int:
        """A first head for `owner` with the newest `size` of `items` (`place`'s next round adds
        the rest, splitting as usual). Returns how many it holds: 0 if another one came first."""
        newest = sorted(items, key=lambda i: i["s"], reverse=True)[: self.size]
        head = {
            "_id": owner,
            "owner_id": owner,
            "hi": MAX_ID,
            "s": HEAD_S,
            "lo": MIN_ID,
            "items": newest,
            "count": len(newest),
            "v": 0,
        }
        try:
            await self._write(session, lambda s: self.coll.insert_one(head, session=s))
        except DuplicateKeyError:
            return 0
        return len(newest)

    async def _insert_lower(
        self,
        owner: ObjectId,
        items: list[Entry],
        lo: ObjectId,
        hi: ObjectId,
        parent: dict[str, Any],
        session: Session,
    ) -> bool:
        """Insert the lower part of a split, unreachable until its parent is cut above it. It
        names its parent (`p`) and the parent's version (`pv`): what `_collect` judges it by."""
        named = {"p": parent["_id"], "pv": parent["v"]}
        doc = {"owner_id": owner, "hi": hi, "lo": lo, "items": items, "v": 0, **named}
        try:
            await self._write(session, lambda s: self.coll.insert_one(doc, session=s))
        except DuplicateKeyError:
            # The same split, retried after a crash (same parent version, same cut): adopt the
            # copy it left. Anything else at this key is a conflict: re-read and start over.
            same = await self.coll.find_one(
                {"owner_id": owner, "hi": hi, "lo": lo, "items": items, **named}, session=session
            )
            return same is not None
        return True

    async def _merge(
        self, owner: ObjectId, bucket: dict[str, Any], add: list[Entry], session: Session
    ) -> bool:
        """Add `add` to `bucket`: a split past `size` is conditional on the bucket's version;
        entries that fit are pushed under conditions that commute with concurrent pushes
        (still in range, room left, not there yet), so busy heads do not starve it."""
        merged = sorted(bucket["items"] + add, key=lambda i: i["s"], reverse=True)
        lo = min(bucket["lo"], merged[-1]["s"])
        if len(merged) <= self.size and lo == bucket["lo"]:
            fits = {
                "_id": bucket["_id"],
                "owner_id": owner,
                **UNSEALED,
                "lo": {"$lte": lo},
                f"items.{self.size - len(add)}": {"$exists": False},
                "items.s": {"$nin": [i["s"] for i in add]},
            }
            push = {"$push": {"items": {"$each": add, "$sort": {"s": -1}}}, "$inc": {"v": 1}}
            return (await self._update_one(fits, push, session)).modified_count == 1
        parts = chunks(merged, self.size)
        lows = [c[-1]["s"] for c in parts[:-1]] + [lo]
        for k in range(len(parts) - 1, 0, -1):
            if not await self._insert_lower(owner, parts[k], lows[k], lows[k - 1], bucket, session):
                # Another split of this version holds the key (in flight, or abandoned: then
                # nothing would ever collect it). Moving the version on fails every split of
                # it and lets the next round collect their lower parts.
                version = {"_id": bucket["_id"], "owner_id": owner, "v": bucket["v"], **UNSEALED}
                await self._update_one(version, {"$inc": {"v": 1}}, session)
                return False
        result = await self._write(
            session,
            lambda s: self.coll.update_one(
                {"_id": bucket["_id"], "owner_id": owner, "v": bucket["v"], **UNSEALED},
                {"$set": {"items": parts[0], "lo": lows[0]}, "$inc": {"v": 1}},
                session=s,
            ),
        )
        return result.modified_count == 1

    async def _collect(self, chain: Chain, session: Session) -> bool:
        """Delete the copies of interrupted splits: one whose parent (`p`) moved past the
        version it was cut at (`pv`) or left the chain can never be linked (the cut is
        conditional on it); nor can an empty one. Named, not found by range: a racing split
        leaves a new bucket around the orphan, whose version says nothing of it (a dead orphan
        then blocked every split at its key), and a live lower part can lie below its parent's
        range (older entries merged into the last bucket: it was deleted in flight). A sealed
        orphan is a merged bucket whose entries the bucket above holds: it goes too. A sealed
        bucket still on the chain is a merge in flight: it is finished (`_absorb`). True if
        anything changed (the caller re-reads the chain)."""
        dead = []
        by_id = {b["_id"]: b for b in chain.buckets}
        for orphan in chain.orphans:
            parent = by_id.get(orphan["p"]) if "p" in orphan else chain.around(orphan)
            if (
                parent is None
                or not orphan["items"]
                or orphan.get("sealed")
                or orphan.get("pv", -1) < parent["v"]
            ):
                dead.append(orphan["_id"])
        if dead:
            owner = chain.orphans[0]["owner_id"]
            await self._write(
                session,
                lambda s: self.coll.delete_many(
                    {"owner_id": owner, "_id": {"$in": dead}}, session=s
                ),
            )
        # The head is never sealed: a sealed bucket has one above it.
        k = next((k for k, b in enumerate(chain.buckets) if b.get("sealed")), None)
        if k is None:
            return bool(dead)
        await self._absorb(chain.buckets[k - 1], chain.buckets[k], session)
        return True

    async def _seal(self, bucket: dict[str, Any], session: Session) -> bool:
        """Seal `bucket` as read (its version) for a merge into the bucket above it; False if it
        changed meanwhile."""
        flt = {"_id": bucket["_id"], "owner_id": bucket["owner_id"], "v": bucket["v"], **UNSEALED}
        update = {"$set": {"sealed": True}, "$inc": {"v": 1}}
        return bool((await self._update_one(flt, update, session)).modified_count == 1)

    async def _absorb(
        self, parent: dict[str, Any], sealed: dict[str, Any], session: Session
    ) -> None:
        """Finish the merge of `sealed` into `parent`, the chain bucket above it: the parent
        takes its entries (unchanged since the seal) and its range in one write, the sealed copy
        goes, and a parent left past `size` is split. Each step is conditional, so any number of
        processes may finish the same merge; a parent that changed meanwhile (split, sealed
        itself) fails the first step and the next read finds the sealed bucket's new parent."""
        owner = parent["owner_id"]
        took = await self._update_one(
            {"_id": parent["_id"], "owner_id": owner, "lo": sealed["hi"], **UNSEALED},
            {
                "$push": {"items": {"$each": sealed["items"], "$sort": {"s": -1}}},
                "$set": {"lo": sealed["lo"]},
                "$inc": {"v": 1},
            },
            session,
        )
        if took.modified_count != 1:
            return
        await self._write(
            session,
            lambda s: self.coll.delete_one(
                {"_id": sealed["_id"], "owner_id": owner, "sealed": True}, session=s
            ),
        )
        if len(parent["items"]) + len(sealed["items"]) > self.size:
            grown = await self.coll.find_one(
                {"_id": parent["_id"], "owner_id": owner}, session=session
            )
            if grown is not None and len(grown["items"]) > self.size:
                await self._merge(owner, grown, [], session)  # split; else the next `place`

    async def mark_trimmed(self, owner: ObjectId, *, session: Session = None) -> None:
        await self._write(
            session,
            lambda s: self.coll.update_one(
                {"_id": owner, "owner_id": owner, "hi": MAX_ID},
                {"$set": {"trimmed": True}, "$setOnInsert": self._empty_head(owner)},
                upsert=True,
                session=s,
            ),
        )

    def _empty_head(self, owner: ObjectId) -> dict[str, Any]:
        return {"hi": MAX_ID, "s": HEAD_S, "lo": MIN_ID, "items": [], "count": 0, "v": 0}

    # -- removals ------------------------------------------------------------------------------
    async def _pull(
        self,
        owner: ObjectId,
        bucket: dict[str, Any],
        ids: list[ObjectId],
        last: bool,
        session: Session,
    ) -> bool:
        """Remove `ids` (all present at the bucket's version) from `bucket`. The last bucket of
        the chain goes when emptied; one in the middle stays, empty, since its range is what
        links the chain. False on a concurrent change (re-read and retry)."""
        flt = {"_id": bucket["_id"], "owner_id": owner, "v": bucket["v"], **UNSEALED}
        is_head = bucket["hi"] == MAX_ID
        if last and not is_head and len(ids) == len(bucket["items"]):
            deleted = await self._write(session, lambda s: self.coll.delete_one(flt, session=s))
            return bool(deleted.deleted_count == 1)
        update: dict[str, Any] = {
            "$pull": {"items": {"s": {"$in": ids}}},
            "$inc": {"v": 1, **({"count": -len(ids)} if is_head else {})},
        }
        result = await self._write(session, lambda s: self.coll.update_one(flt, update, session=s))
        return bool(result.modified_count == 1)

    async def remove_status(
        self, owner: ObjectId, status_id: ObjectId, *, session: Session = None
    ) -> int:
        """Remove one status from the owner's timeline, chain and loose entry, by the removal
        protocol (module docstring, "Loose entries"): tombstone, chain, bury."""
        which = {"s": status_id}
        await self.loose.mark_gone(owner, which)
        removed = await self.unchain(owner, status_id, session=session)
        await self.loose.bury(owner, which)
        return removed

    async def unchain(
        self, owner: ObjectId, status_id: ObjectId, *, session: Session = None
    ) -> int:
        """Remove one status from the owner's chain (and from any interrupted split's copy),
        not from its loose entries. A sealed bucket holding it (a merge in flight) is merged
        first, then the status is removed from the bucket that took it."""
        removed = 0
        for _ in range(PLACE_ATTEMPTS):
            found = await self.coll.find(
                {"items.s": status_id, "owner_id": owner}, session=session
            ).to_list()
            found = [b for b in found if not is_loose(b)]
            if not found:
                return removed
            if any(b.get("sealed") for b in found):
                await self._collect(await self.chain(owner, session=session), session)
                continue
            chained = max(found, key=lambda b: b["hi"])
            missed = False
            for bucket in found:
                counted = bucket is chained and bucket["hi"] == MAX_ID
                flt = {"_id": bucket["_id"], "owner_id": owner, "items.s": status_id, **UNSEALED}
                update: dict[str, Any] = {
                    "$pull": {"items": {"s": status_id}},
                    "$inc": {"v": 1, **({"count": -1} if counted else {})},
                }
                result = await self._update_one(flt, update, session)
                missed = missed or not result.modified_count
                if bucket is chained and result.modified_count:
                    removed = 1
                    if not counted:
                        await self._count(owner, -1, session)
            if chained["hi"] != MAX_ID and len(chained["items"]) <= half(self.size):
                await self._compact(owner, await self.chain(owner, session=session), session)
            if not missed:
                return removed
            # A bucket changed since the look: gone already, or sealed (look again).
        raise Conflict(f"the buckets of {owner} kept changing")

    async def remove(
        self,
        owner: ObjectId,
        select: Callable[[Chain], set[ObjectId]],
        loose: dict[str, Any] | Callable[[Entry], bool] | None = None,
        *,
        session: Session = None,
    ) -> int:
        """Remove the entries `select(chain)` names from the owner's chain, whatever changes
        concurrently, and the loose entries `loose` names (a filter of loose documents, or a
        test of their entries), by the removal protocol: those are tombstoned first and buried
        after. Returns how many chain entries this call removed."""
        which: dict[str, Any] | None = None
        if callable(loose):
            test = loose
            docs = await self.loose.all(owner)
            doomed = [
                d["s"] for d in docs if "gone" not in d and d["items"] and test(d["items"][0])
            ]
            which = {"s": {"$in": doomed}} if doomed else None
        elif loose is not None:
            which = loose
        if which is not None:
            await self.loose.mark_gone(owner, which)
        removed = (await self._remove(owner, select, None, session))[0]
        if which is not None:
            await self.loose.bury(owner, which)
        return removed

    async def _remove(
        self,
        owner: ObjectId,
        select: Callable[[Chain], set[ObjectId]],
        first: Chain | None,
        session: Session,
    ) -> tuple[int, Chain]:
        """`remove`, starting from `first` when the caller has just read the chain; also returns
        the last chain read (in which `select` named nothing)."""
        removed = 0
        chain = first
        for _ in range(PLACE_ATTEMPTS):
            chain = chain or await self.chain(owner, session=session)
            if await self._collect(chain, session):  # a merge in flight: finished first
                chain = None
                continue
            doomed = select(chain)
            if not doomed:
                return removed, await self._compact(owner, chain, session)
            sealed = 0
            last = True  # bottom up: a bucket is last once every one below it went
            for bucket in reversed(chain.buckets):
                ids = [i["s"] for i in bucket["items"] if i["s"] in doomed]
                emptied = len(ids) == len(bucket["items"]) and bucket["hi"] != MAX_ID
                if ids and await self._pull(owner, bucket, ids, last, session):
                    removed += len(ids)
                    sealed += len(ids) if bucket["hi"] != MAX_ID else 0
                    last = last and emptied
                else:
                    last = False
            await self._count(owner, -sealed, session)
            chain = None
        raise Conflict(f"the buckets of {owner} kept changing")

    async def trim(self, owner: ObjectId, *, session: Session = None) -> int:
        """Drop entries beyond the owner's `cap` newest; returns how many went."""
        return (await self.trimmed(owner, session=session))[0]

    async def trimmed(self, owner: ObjectId, *, session: Session = None) -> tuple[int, int]:
        """`trim`, and how many entries the chain held at its last read. The owner is marked
        trimmed (removals must then refill) before the look that sets the cut, as
        receiver_copies does; a chain already marked when read is that look (at TIMELINE_MAX,
        the steady state, a trim is then one read, the pulls and one read to confirm)."""
        chain = await self.chain(owner, session=session)
        if len(chain.ids()) <= self.cap:
            return 0, len(chain.ids())
        if not (chain.buckets and chain.buckets[0].get("trimmed")):
            await self.mark_trimmed(owner, session=session)
            chain = await self.chain(owner, session=session)
        removed, final = await self._remove(
            owner, lambda c: set(c.ids()[self.cap :]), chain, session
        )
        return removed, len(final.ids())

    async def _compact(self, owner: ObjectId, chain: Chain, session: Session) -> Chain:
        """Merge each bucket other than the head left under half full (the last one: left
        empty) into the bucket above it, and extend the last bucket's range to MIN_ID (a removal
        that deleted the last bucket left the one above it pointing at nothing, a look-up more
        for every page that reaches it). Best effort: a merge that meets a concurrent change is
        left to the next removal or placement, which finishes it; the chain is correct
        throughout, only less compact. Returns the last chain read."""
        least = half(self.size)
        for _ in range(PLACE_ATTEMPTS):
            if await self._collect(chain, session):
                chain = await self.chain(owner, session=session)
                continue
            buckets = chain.buckets
            last = len(buckets) - 1
            small = next(
                (
                    b
                    for k, b in enumerate(buckets)
                    if k and len(b["items"]) < (least if k < last else 1)
                ),
                None,
            )
            if small is None:
                if buckets and buckets[-1]["lo"] != MIN_ID:
                    bottom = buckets[-1]
                    await self._update_one(
                        {"_id": bottom["_id"], "owner_id": owner, "lo": bottom["lo"], **UNSEALED},
                        {"$set": {"lo": MIN_ID}, "$inc": {"v": 1}},
                        session,
                    )
                return chain
            await self._seal(small, session)  # the next round's `_collect` merges it
            chain = await self.chain(owner, session=session)
        return chain
