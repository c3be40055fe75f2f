"""Reading a timeline so that removals never lag: the pages and the unread count that every API
serves, over whichever strategy serves the reader.

A strategy reads its derived data, which may still hold a status deleted or an author unfriended
a moment ago (the worker removes them later). So every page and count is checked against the
revocation records (app.domain.revocations); items a removal took are left out and, when the
timeline has more, the page is read again a little longer, so it still holds `limit` items and
its cursors stay positions in the same timeline. Strategies that read the source of truth
(`reads_truth`) are served as they are, at no cost.

The check comes first when it can: the records in flight that could touch the page (the
reader's friendship records, status records in the page's id range) are asked for by range
*before* the items are read, one query that almost always answers none. Any removal that had
returned before the request then either has its record among them or was applied to every
derived timeline (and settled) before the read. When too many are in flight (PAGE_CANDIDATES),
the page is checked *after* its read, by its items' keys; a record settled and deleted in
between would let the page show what its removal took, so records outlive their settle by
revocations.SETTLED_KEEP_S, and a page whose read and check took longer than CHECK_WITHIN_S
(a paused process, a stalled server) is read and checked again; one that never makes it in time
is refused as unavailable (503) rather than served unchecked.

A strategy whose first page and refresh are one query (`ReadsWithPrelude`: receiver_copies)
gets the records and the page from one command, an aggregate over the records with the page's
query as its `$unionWith`: one round trip instead of two on the hottest path. Nothing is
assumed of the order the server reads the two in, so that one is a check *after* the read: it
asks for settled records too (they outlive their settle by SETTLED_KEEP_S), and an answer that
took longer than CHECK_WITHIN_S, or brought more than PAGE_CANDIDATES records, is put aside for
the two-query way above.
"""

from __future__ import annotations

import time

from bson import ObjectId

from app.domain import revocations
from app.domain.errors import Unavailable
from app.domain.revocations import Item
from app.storage.store import Collection
from app.strategies.contract import (
    Page,
    Prelude,
    ReadsWithPrelude,
    StatusView,
    TimelineStrategy,
)

# A page that lost items to the check is read again, longer by what it lost, at most this many
# times in all: each read after the first happens only while removals are in flight for this
# reader, and after the last one the page is returned shorter, with a cursor past what it
# skipped (the next page goes on from there), rather than reading on without bound.
MAX_PAGE_READS = 4
# Records a page asks for before its read (`revocations.pending_for`): removals in flight in
# the page's range, almost always none; past this many (a stopped worker and a burst of
# deletes) the page is checked by its items' keys instead, a bounded query of 2 × limit keys.
PAGE_CANDIDATES = 100
# The longest a page's read and its check by keys may take together: half of how long a
# settled record is kept, a margin for the two processes' clocks running at different rates.
CHECK_WITHIN_S = revocations.SETTLED_KEEP_S / 2


class CheckTooSlow(Unavailable):
    """A page could not be read and checked within CHECK_WITHIN_S, every time it was tried."""

    code = "timeline_busy"


def _items(views: list[StatusView]) -> list[Item]:
    return [Item(v.id, v.author) for v in views]


async def read_page(
    coll: Collection,
    strategy: TimelineStrategy,
    user_id: ObjectId,
    *,
    limit: int,
    before: ObjectId | None = None,
    after: ObjectId | None = None,
) -> Page:
    """A page of `user_id`'s timeline as `strategy.read` gives it, less what a removal took.
    `coll` is the store's `revocations`.

    The records that could touch the page are asked for first, by range (the reader's
    friendship records, status records in the page's id range; `revocations.pending_for`),
    before the page is read: one cheap query that almost always answers none. Only when more
    than PAGE_CANDIDATES are in flight (a stopped worker and many deletes) is the page checked
    after its read, by its items' keys, in time (module docstring)."""
    if strategy.reads_truth:
        return await strategy.read(user_id, limit=limit, before=before, after=after)
    # One more than the page, checked too: whether a next page exists must not be inferred
    # from an item that is hidden.
    want = limit + 1
    read, pending = await _records(coll, strategy, user_id, limit=want, before=before, after=after)
    checked: tuple[Page, list[StatusView]] | None = None
    for _ in range(MAX_PAGE_READS):
        started = time.monotonic()
        if read is not None:  # the first read, made with the records
            page, read = read, None
        else:
            page = await strategy.read(user_id, limit=want, before=before, after=after)
        items = _items(page.items)
        if pending.complete:
            gone = {i.id for i in items if pending.hides(user_id, i)}
        else:
            gone = await revocations.hidden(coll, user_id, items)
            if time.monotonic() - started > CHECK_WITHIN_S:
                continue  # a record settled meanwhile may be gone already: read again
        kept = [v for v in page.items if v.id not in gone]
        checked = page, kept
        # Done when the page ends the timeline or holds more than `limit` visible items; else
        # items were hidden and the timeline goes on: read again, longer by what was hidden.
        if len(kept) > limit or not (page.has_older or page.gap):
            break
        want = limit + 1 + len(gone)
    if checked is None:
        raise CheckTooSlow("the timeline could not be read in time; retry")
    page, kept = checked
    more = len(kept) > limit or page.has_older
    return Page(
        kept[:limit],
        has_older=more,
        gap=after is not None and (len(kept) > limit or page.gap),
        resume_before=page.items[-1].id if page.items else None,
    )


async def _records(
    coll: Collection,
    strategy: TimelineStrategy,
    user_id: ObjectId,
    *,
    limit: int,
    before: ObjectId | None,
    after: ObjectId | None,
) -> tuple[Page | None, revocations.Pending]:
    """The records that may touch the page, with its first read when one command gives both
    (`_read_with_records`), else asked for before any read (None: nothing read yet)."""
    if before is None and isinstance(strategy, ReadsWithPrelude):
        together = await _read_with_records(coll, strategy, user_id, limit=limit, after=after)
        if together is not None:
            return together
    pending = await revocations.pending_for(
        coll, user_id, after, before=before, cap=PAGE_CANDIDATES
    )
    return None, pending


async def _read_with_records(
    coll: Collection,
    strategy: ReadsWithPrelude,
    user_id: ObjectId,
    *,
    limit: int,
    after: ObjectId | None,
) -> tuple[Page, revocations.Pending] | None:
    """A first page or refresh and the records that may touch it, settled ones too, from one
    command (module docstring); None when that answer cannot be used."""
    started = time.monotonic()
    prelude = Prelude(coll, revocations.ranges_for(user_id, after, None), PAGE_CANDIDATES + 1)
    page, records = await strategy.read_with(prelude, user_id, limit=limit, after=after)
    pending = revocations.Pending.of(records, PAGE_CANDIDATES)
    if not pending.complete or time.monotonic() - started > CHECK_WITHIN_S:
        return None
    return page, pending


async def count_newer(
    coll: Collection, strategy: TimelineStrategy, user_id: ObjectId, after: ObjectId | None
) -> int:
    """How many items of the timeline are newer than `after` (all when None), at most
    `max_items`, leaving out what a removal took. One query on the revocation records first; only
    when some may touch this reader are the items themselves read (bounded by `max_items`)."""
    if strategy.reads_truth:
        return await strategy.count_newer(user_id, after)
    pending = await revocations.pending_for(coll, user_id, after)
    if not pending.keys:
        return await strategy.count_newer(user_id, after)
    for _ in range(MAX_PAGE_READS):
        started = time.monotonic()
        page = await strategy.read(user_id, limit=strategy.max_items, after=after)
        items = _items(page.items)
        if pending.complete:
            return sum(1 for i in items if not pending.hides(user_id, i))
        gone = await revocations.hidden_many(coll, user_id, items)
        if time.monotonic() - started <= CHECK_WITHIN_S:
            return sum(1 for i in items if i.id not in gone)
    raise CheckTooSlow("the unread count could not be read in time; retry")


async def read_above(
    coll: Collection, strategy: TimelineStrategy, user_id: ObjectId, *, limit: int, above: ObjectId
) -> list[StatusView]:
    """The `limit` items of the timeline just above `above` (the oldest of those newer than it),
    newest first: no gap between `above` and the page (Mastodon's `min_id`). Built on the checked
    count and pages, so it is the same timeline as every other read, on every strategy: it reads
    the items above `above` (at most `max_items`) and keeps the oldest `limit`. A post arriving
    between the count and the read shows as a gap, and the read is repeated wider."""
    want = max(limit, await count_newer(coll, strategy, user_id, above))
    while True:
        page = await read_page(coll, strategy, user_id, limit=want, after=above)
        if not page.gap or want >= strategy.max_items:
            return page.items[-limit:]
        want = min(2 * want, strategy.max_items)
