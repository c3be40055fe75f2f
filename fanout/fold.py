"""The fold pass of inbox_buckets: a loop beside the workers (fanout.pool) that moves loose
entries older than FOLD_AGE_S into their owners' chains (app/strategies/inbox_buckets/fold.py),
off every post's path.

A fan-out writes one loose document per receiver (an insert); pages merge them with the head in
the same query, up to LOOSE_READ of them. Folding late amortizes each chain write over the
entries an owner received meanwhile; folding at all keeps pages within LOOSE_READ and lets the
chain's trim hold timelines at TIMELINE_MAX. A pass reads at most FOLD_SCAN loose documents
through the (hi, s) index (every owner's, oldest status first) and folds their owners one by
one. Passes in several processes at once are harmless: folds of one owner are safe against
each other (claims by token) and against removals (tombstones).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from bson import ObjectId

from app.context import AppContext
from app.storage.chunks import chunked
from app.storage.models import utcnow
from app.strategies.contract import Contention
from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.chain import MAX_ID
from app.strategies.inbox_buckets.fold import FOLD_OWNERS
from fanout.periodic import PeriodicPass

log = logging.getLogger("timeline.fold")

# How often a pass runs. Each pass with nothing to fold is one empty index range read.
FOLD_INTERVAL_S = 5.0
# How old a loose entry's status must be before a pass folds it. Longer amortizes a chain write
# (a head rewrite: ~0.8 ms and a bucket's bytes on the embedded server) over more of an owner's
# entries; shorter keeps fewer loose entries per page. 30 s: a reader receiving a post a second
# gets ~30 entries folded per chain write, within LOOSE_READ.
FOLD_AGE_S = 30.0
# Loose documents one pass reads (their owners are folded; the rest waits for the next pass).
FOLD_SCAN = 1000


async def fold_due(strategy: InboxBuckets, now: datetime) -> int:
    """Fold the owners of up to FOLD_SCAN loose entries whose status is older than FOLD_AGE_S
    at `now`, the owners whose reads asked for a fold first (loose.FOLD_REQUEST_S, the oldest
    `s`); returns how many loose documents went."""
    cutoff = ObjectId.from_datetime(now - timedelta(seconds=FOLD_AGE_S))
    cursor = (
        strategy.inbox.coll.find({"hi": MAX_ID, "s": {"$lt": cutoff}}, {"owner_id": 1})
        .sort([("hi", 1), ("s", 1)])
        .limit(FOLD_SCAN)
    )
    owners = list(dict.fromkeys([d["owner_id"] async for d in cursor]))
    folded = 0
    for batch in chunked(owners, FOLD_OWNERS):
        try:
            folded += await strategy.fold_many(batch)
        except Contention as exc:  # a busy owner: the next pass folds it, the rest are done
            log.info("a fold left an owner for the next pass: %r", exc)
    return folded


class FoldPass(PeriodicPass):
    """`run()` folds at once and then every FOLD_INTERVAL_S (jittered) until `handle_exit()`; a
    failed pass is logged and skipped, never ends the loop (fanout.periodic)."""

    name = "fold"

    def __init__(
        self,
        ctx: AppContext,
        *,
        interval_s: float = FOLD_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock, rng=rng)
        built = ctx.strategy
        if not isinstance(built, InboxBuckets):
            # Loose entries exist only where inbox_buckets is written: the configured strategy,
            # or one maintained beside it during a switch (fanout.switch).
            built = ctx.build_strategy("inbox_buckets")
        assert isinstance(built, InboxBuckets)
        self.strategy = built

    async def run_once(self) -> int:
        folded = await fold_due(self.strategy, self.clock())
        self.passes += 1
        if folded:
            log.info("folded %d loose inbox entries", folded)
        return folded
