"""Who is reading: activity tracking and the TIMELINE_ACTIVE_DAYS window (docs/design.md,
"Inactive users").

A read records the reader's activity at most once per ACTIVITY_RESOLUTION (a conditional
update), so reads cost no write. A reader whose last read is older than the window gets no
fan-out work (receiver_copies writes no copies for them). The read that brings them back marks
them active and not `materialized` in one conditional update, recorded with a `timeline_rebuild`
event in the outbox (app.pipeline.outbox: both or neither); until the worker has applied that event,
their pages are served from the source of truth by the fanout_on_read strategy's page code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.pipeline.checkpoint import fenced
from app.pipeline.outbox import Commit, NothingWritten
from app.storage.chunks import chunked
from app.storage.db import Session
from app.storage.models import utcnow
from app.storage.store import Collection

# A read updates `last_read_at` only if the stored one is older than this: at most one write
# per user per hour, however often they read. The window is whole days (TIMELINE_ACTIVE_DAYS
# >= 1), so an hour's staleness can only make a reader look active an hour longer, never
# inactive while reading.
ACTIVITY_RESOLUTION = timedelta(hours=1)
# Receivers looked up per query when fan-out filters out inactive ones: bounded `$in` lists.
# Small on purpose: the embedded server's `$in` costs time growing with the square of the list
# (500 values 0.56 s, README "Known limits"), so 1,000-id lists made each 1,000-receiver batch
# of a fan-out wait ~2 s, and the SIGKILL test's 2,500-friend fan-outs stopped draining in time;
# 100-id lists cost ~20 ms each there and are still few round trips on mongod.
LOOKUP_BATCH = 100

# A process answers a read from memory (no round trip) for a reader it saw read within
# ACTIVITY_RESOLUTION and served by the materialized timeline, for at most this long. Sound for
# any length: only a return unsets `materialized`, and a return needs a `last_read_at` older than
# the window (whole days), which a reader seen within the hour cannot have (`last_read_at` only
# grows). The bound is for records changed behind the service's back (the soak ages readers
# directly in the database 25 s before their return): such a change is seen within it.
ACTIVITY_CACHE_S = 5.0
# Readers one process remembers at most; past it, the memory starts afresh (a miss costs the
# one look-up a read cost without it).
MAX_CACHED_READERS = 100_000

Clock = Callable[[], datetime]


class _AlreadyMarked(NothingWritten):
    """Another read marked the return first: its event does the rebuild."""


@dataclass
class Activity:
    """The activity window over one store's `user_activity` collection, and the clock it is
    measured by (tests put a fake clock here; the worker's strategy and the API share this
    object through the AppContext)."""

    coll: Collection
    active_days: int
    clock: Clock = field(default=utcnow)
    # Readers served by the materialized timeline whose last read needs no write yet: when this
    # process looked (time.monotonic) and the `last_read_at` it found or wrote (`touch`).
    ticks: Callable[[], float] = field(default=time.monotonic, repr=False)
    _recent: dict[ObjectId, tuple[float, datetime]] = field(
        default_factory=dict, init=False, repr=False
    )

    def cutoff(self) -> datetime:
        """Users whose last read is older than this are inactive."""
        return self.clock() - timedelta(days=self.active_days)

    async def inactive_among(self, users: Sequence[ObjectId]) -> set[ObjectId]:
        """Those of `users` whose last read is older than the window (never read: active)."""
        coll = self.coll
        cutoff = self.cutoff()
        away = {"last_read_at": {"$lt": cutoff}}
        # The cheaper of two bounded reads: when no more users are away than `users` holds
        # (none at all, typically, right after a deployment), every away user from one range
        # of the `last_read_at` index, intersected here; otherwise `users` in chunks.
        if await coll.count_documents(away, limit=len(users) + 1) <= len(users):
            wanted = set(users)
            return {d["_id"] async for d in coll.find(away, {"_id": 1}) if d["_id"] in wanted}
        found: set[ObjectId] = set()
        for chunk in chunked(users, LOOKUP_BATCH):
            cursor = coll.find({"_id": {"$in": chunk}, "last_read_at": {"$lt": cutoff}}, {"_id": 1})
            found.update([d["_id"] async for d in cursor])
        return found

    async def count_inactive(self) -> int:
        """For /health: one range over the `last_read_at` index."""
        return await self.coll.count_documents({"last_read_at": {"$lt": self.cutoff()}})

    async def serves_materialized(self, user_id: ObjectId) -> bool:
        """Whether a read by `user_id` now would be served by the materialized timeline,
        without recording anything (for `timeline check`)."""
        doc = await self.coll.find_one({"_id": user_id})
        if doc is None:
            return True
        return bool(doc["last_read_at"] >= self.cutoff() and doc.get("materialized", True))

    async def touch(self, commit: Commit, user_id: ObjectId) -> bool:
        """Record a read by `user_id`; whether their materialized timeline may serve it. A
        return's event is recorded with `commit` (the unit of work, AppContext.commit).

        One indexed `_id` look-up per read, none for a reader this process saw within
        ACTIVITY_CACHE_S whose last read is younger than ACTIVITY_RESOLUTION; a write only when
        the stored time is older than ACTIVITY_RESOLUTION, or on a return (see `_return`)."""
        coll = self.coll
        now = self.clock()
        asked = self.ticks()
        seen = self._recent.get(user_id)
        if (
            seen is not None
            and asked - seen[0] < ACTIVITY_CACHE_S
            and seen[1] >= now - ACTIVITY_RESOLUTION
        ):
            return True
        doc = await coll.find_one({"_id": user_id})
        if doc is None:
            # The first read ever: nothing was skipped for a user with no document (fan-out
            # counts them active), so the materialized timeline is complete. A concurrent
            # first read inserts the same thing.
            with contextlib.suppress(DuplicateKeyError):  # a racing first read inserted it
                await coll.update_one(
                    {"_id": user_id},
                    {"$setOnInsert": {"last_read_at": now, "materialized": True, "returns": 0}},
                    upsert=True,
                )
            self._remember(user_id, asked, now)
            return True
        last = doc["last_read_at"]
        if last < self.cutoff():
            self._recent.pop(user_id, None)
            return await self._return(commit, user_id, last, now)
        if last < now - ACTIVITY_RESOLUTION:
            await coll.update_one(
                {"_id": user_id, "last_read_at": {"$lt": now - ACTIVITY_RESOLUTION}},
                {"$set": {"last_read_at": now}},
            )
            last = now
        served = bool(doc.get("materialized", True))
        if served:
            self._remember(user_id, asked, last)
        else:
            self._recent.pop(user_id, None)  # a rebuild is under way: look again next time
        return served

    def _remember(self, user_id: ObjectId, asked: float, last_read_at: datetime) -> None:
        if len(self._recent) >= MAX_CACHED_READERS:
            self._recent.clear()
        self._recent[user_id] = (asked, last_read_at)

    async def _return(
        self, commit: Commit, user_id: ObjectId, last_read_at: datetime, now: datetime
    ) -> bool:
        """Mark a returning user active and not materialized, with the rebuild event in the same
        write path (app.pipeline.outbox). The update is conditional on the `last_read_at` just
        read, so
        of racing returns exactly one records an event. Always False: this read is served from
        the truth (the rebuild has not even started)."""
        coll = self.coll

        async def mark(session: Session) -> None:
            result = await coll.update_one(
                {"_id": user_id, "last_read_at": last_read_at},
                {"$set": {"last_read_at": now, "materialized": False}, "$inc": {"returns": 1}},
                session=session,
            )
            if result.matched_count == 0:
                raise _AlreadyMarked

        event = {"kind": "timeline_rebuild", "author_id": user_id}
        try:
            await commit([event], mark)
        except _AlreadyMarked:
            pass
        return False


async def rebuild_generation(coll: Collection, user_id: ObjectId) -> int:
    """Read before a rebuild starts: the return it serves (`returns`); `coll` is the store's
    `user_activity`."""
    doc = await coll.find_one({"_id": user_id}, {"returns": 1})
    return int(doc.get("returns", 0)) if doc else 0


async def finish_rebuild(coll: Collection, user_id: ObjectId, generation: int) -> None:
    """The rebuild that started at `generation` is complete: reads may use the materialized
    timeline again. Fenced (only the lease holder writes it), and conditional on the
    generation: a return after the rebuild started may have been skipped by fan-outs the
    rebuild did not see, and its own event rebuilds (and finishes) again."""
    async with fenced():
        await coll.update_one(
            {"_id": user_id, "returns": generation}, {"$set": {"materialized": True}}
        )
