"""Expiry of applied events, idempotency keys and rate-limit counters: a loop beside the workers
(fanout.pool) that deletes what is past its keep time by an indexed range, in bounded batches.

This replaces TTL indexes, on every server. The embedded server's TTL monitor scans and decodes
every document of every collection that has a TTL index, expired or not, under its storage lock:
its pause grows with what is *kept* (22 s once a minute at 200,000 kept idempotency keys,
docs/benchmarks.md, "Soak"). Here a pass counts and deletes only the expired range of an index,
about PRUNE_BATCH documents per delete, yielding between deletes, so no request waits behind
more than one of them. On MongoDB the same deletes are what mongod's monitor would
do; one code path keeps the expiry that the tests exercise the one that runs in production
(docs/operations.md, "Expiry").

Guarantees: a document is deleted only once it is past its keep time by the clock of the
process running the pass (`now`); an applied event only in state `done`. Passes in several
processes at once are harmless (a delete of what another pass removed deletes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from app.limits.ratelimit import COLLECTION as RATE_LIMITS_COLLECTION
from app.storage.models import DONE_EVENT_TTL_SECONDS, IDEMPOTENCY_TTL_SECONDS, utcnow
from app.storage.store import Store
from fanout.periodic import PeriodicPass

log = logging.getLogger("timeline.housekeeping")

# How often a pass runs: as often as mongod's TTL monitor, so an expired document is gone within
# about a minute of its time, as before.
HOUSEKEEPING_INTERVAL_S = 60.0
# Documents per delete: the longest any request waits behind a pass is about one such delete
# (its index entries and one fsynced commit). On the embedded server a range delete of 500
# took 80-160 ms, of 1,000 200 ms, of 5,000 2 s (it grows faster than the count).
PRUNE_BATCH = 500
# The pause between two deletes of one pass: requests and event claims queued meanwhile run
# first. A backlog of expired documents (a day without workers) drains at a few thousand a
# second instead of in one long write.
BATCH_PAUSE_S = 0.05
# The first window of time a backlog is deleted by (then halved or doubled to hold about
# PRUNE_BATCH documents), and the narrowest: a burst denser than PRUNE_BATCH in this long is
# deleted as one.
FIRST_WINDOW = timedelta(seconds=HOUSEKEEPING_INTERVAL_S)
NARROWEST_WINDOW = timedelta(milliseconds=10)


@dataclass(frozen=True)
class Pruned:
    done_events: int
    idempotency_keys: int
    rate_limit_counters: int = 0


async def prune_range(
    coll: AsyncCollection[Any],
    field: str,
    cutoff: datetime,
    only: dict[str, Any] | None = None,
    *,
    batch: int = PRUNE_BATCH,
    pause_s: float = BATCH_PAUSE_S,
) -> int:
    """Delete every document of `coll` matching `only` whose `field` is before `cutoff`; returns
    how many this call deleted. Every command is a range count or a range delete on the index
    that `field` leads, never a find: SecantusDB reads a find's whole range before its limit
    (a `find_one` over 15,000 expired keys took 340-580 ms, a count of 500 of them 14 ms).

    The expired range is counted once; up to `batch` it goes in one delete (a pass at steady
    state: what expired since the last one). A larger one (a backlog) goes window by window of
    time from the cutoff backwards, each window counted first and narrowed until it holds at most
    `batch` documents, with `pause_s` between deletes. Every delete repeats the whole filter, so
    a document that changed meanwhile (no longer matching) stays."""
    base = dict(only or {})

    def before(hi: datetime, lo: datetime | None = None) -> dict[str, Any]:
        bounds: dict[str, Any] = {"$lt": hi}
        if lo is not None:
            bounds["$gte"] = lo
        return {**base, field: bounds}

    left = await coll.count_documents(before(cutoff))
    if left <= batch:
        return (await coll.delete_many(before(cutoff))).deleted_count if left else 0
    deleted, hi, window = 0, cutoff, FIRST_WINDOW
    while left > 0:
        lo = hi - window
        inside = await coll.count_documents(before(hi, lo))
        if inside > batch and window > NARROWEST_WINDOW:
            window = max(window / 2, NARROWEST_WINDOW)
            continue
        n = (await coll.delete_many(before(hi, lo))).deleted_count if inside else 0
        deleted += n
        left -= n
        hi = lo
        if inside < batch // 2:
            window *= 2
        if n == 0 or left <= 0:
            # Another process's pass may have deleted some meanwhile: what is really left
            # (the older part of the range, so this count shrinks as the walk goes on).
            left = await coll.count_documents(before(hi))
        if left > 0 and n:
            await asyncio.sleep(pause_s)
    return deleted


async def prune(
    store: Store,
    *,
    now: datetime | None = None,
    batch: int = PRUNE_BATCH,
    pause_s: float = BATCH_PAUSE_S,
) -> Pruned:
    """One pass: applied events DONE_EVENT_TTL_SECONDS after `done_at`, idempotency keys (done
    or still in flight) IDEMPOTENCY_TTL_SECONDS after `created_at`, rate-limit counters after
    their `expires_at` (app.limits.ratelimit: a window's counter is never read after its window)."""
    at = now or utcnow()
    events = await prune_range(
        store.events,
        "done_at",
        at - timedelta(seconds=DONE_EVENT_TTL_SECONDS),
        {"state": "done"},
        batch=batch,
        pause_s=pause_s,
    )
    keys = await prune_range(
        store.idempotency_keys,
        "created_at",
        at - timedelta(seconds=IDEMPOTENCY_TTL_SECONDS),
        batch=batch,
        pause_s=pause_s,
    )
    counters = await prune_range(
        store.db[RATE_LIMITS_COLLECTION], "expires_at", at, batch=batch, pause_s=pause_s
    )
    return Pruned(done_events=events, idempotency_keys=keys, rate_limit_counters=counters)


class Housekeeping(PeriodicPass):
    """`run()` prunes at once and then every HOUSEKEEPING_INTERVAL_S (jittered) until
    `handle_exit()`; a failed pass (a database outage) is logged and skipped, never ends the
    loop."""

    name = "housekeeping"

    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = HOUSEKEEPING_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock, rng=rng)
        self.store = store

    async def run_once(self) -> Pruned:
        pruned = await prune(self.store, now=self.clock())
        self.passes += 1
        if pruned.done_events or pruned.idempotency_keys or pruned.rate_limit_counters:
            log.info(
                "expired %d applied events, %d idempotency keys, %d rate-limit counters",
                pruned.done_events,
                pruned.idempotency_keys,
                pruned.rate_limit_counters,
            )
        return pruned
