"""inbox_buckets' loose entries and their fold (app/strategies/inbox_buckets/fold.py): a removal
between any two steps of a fold is never shown once it has returned, and nothing is lost or
held twice; a fold cut short after any step is finished by the next; two folds racing agree;
a first page reads the head and a bounded number of loose entries in one query; TIMELINE_MAX
is exact with loose entries present; the fold pass folds only what is old enough."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring

from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.chain import MAX_ID, MIN_ID, Conflict, Entry
from app.strategies.inbox_buckets.fold import FOLD_CLAIM_S
from app.strategies.inbox_buckets.loose import LOOSE_READ, LayoutOutdated
from benchmarks.explain import explain_page
from entrypoints.migrate import MIGRATIONS_DIR
from fanout.fold import FOLD_AGE_S, fold_due
from tests.harness import Harness, listen_to_clients

SIZE = 3
SMALL_MAX = 6
pytestmark = pytest.mark.parametrize("strategy", ["inbox_buckets"])


@pytest.fixture
def inbox_bucket_size() -> int:
    return SIZE


class Finds(monitoring.CommandListener):
    """The collections of the finds sent while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.queries: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name == "find":
            self.queries.append(str(event.command.get("find")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


FINDS = Finds()


@pytest.fixture(autouse=True)
def counted_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    listen_to_clients(monkeypatch, FINDS)


@contextmanager
def counting() -> Iterator[Finds]:
    FINDS.on, FINDS.queries = True, []
    try:
        yield FINDS
    finally:
        FINDS.on = False


def strategy_of(h: Harness) -> InboxBuckets:
    strategy = h.ctx.strategy
    assert isinstance(strategy, InboxBuckets)
    return strategy


def oid(n: int) -> ObjectId:
    """A status id of our choosing (older for smaller n)."""
    return ObjectId(f"{n:024x}")


def item(n: int, author: ObjectId) -> Entry:
    return {"s": oid(n), "a": author, "n": "someone", "t": f"status {n}", "c": datetime.now(UTC)}


async def deliver(h: Harness, owner: ObjectId, numbers: list[int]) -> None:
    """A fan-out of each status to `owner`: one loose entry each."""
    for n in numbers:
        assert await strategy_of(h).inbox.loose.insert([owner], item(n, owner)) == 1


async def shown(h: Harness, owner: ObjectId) -> list[int]:
    """What every read shows: timeline_ids, the pages of 2 and the count, which must agree."""
    strategy = strategy_of(h)
    ids = await strategy.timeline_ids(owner)
    paged: list[ObjectId] = []
    before: ObjectId | None = None
    while True:
        page = await strategy.read(owner, limit=2, before=before)
        paged += [v.id for v in page.items]
        if not page.has_older:
            break
        before = page.items[-1].id
    assert paged == ids
    assert await strategy.count_newer(owner, None) == len(ids)
    return [int(str(i), 16) for i in ids]


async def loose_left(h: Harness, owner: ObjectId) -> list[dict[str, Any]]:
    return await strategy_of(h).inbox.loose.all(owner)


async def chain_numbers(h: Harness, owner: ObjectId) -> list[int]:
    return [int(str(i), 16) for i in (await strategy_of(h).inbox.chain(owner)).ids()]


def around_place(
    h: Harness,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
) -> list[bool]:
    """Run `before()` / `after()` once, around the next fold's placement (after its claim,
    before its deletes)."""
    inbox = strategy_of(h).inbox
    place = inbox.place
    ran: list[bool] = []

    async def hooked(owner: ObjectId, items: list[Entry], **kwargs: Any) -> int:
        first = not ran
        ran.append(True)
        if first and before is not None:
            await before()
        placed = await place(owner, items, **kwargs)
        if first and after is not None:
            await after()
        return placed

    monkeypatch.setattr(inbox, "place", hooked)
    return ran


@pytest.mark.parametrize("when", ["after_claim", "after_place"])
@pytest.mark.parametrize("removal", ["status", "author"])
async def test_a_removal_in_the_middle_of_a_fold_is_never_shown(
    h: Harness, monkeypatch: pytest.MonkeyPatch, when: str, removal: str
) -> None:
    """A delete (or an unfriend) that returns while a fold has claimed its entry, before or
    after the fold put it in the chain: no read shows it from then on, the fold pulls it from
    the chain, and every other entry ends in the chain once."""
    owner, other = ObjectId(), ObjectId()
    strategy = strategy_of(h)
    await strategy.inbox.place(owner, [item(1, owner)])  # a head
    await deliver(h, owner, [2, 3, 4])
    await strategy.inbox.loose.insert([owner], item(5, other))
    doomed = 5 if removal == "author" else 3

    async def remove() -> None:
        if removal == "status":
            await strategy.inbox.remove_status(owner, oid(doomed))
        else:
            await strategy.timelines.layout.remove_author(owner, other)
        assert doomed not in await shown(h, owner)  # the removal has returned

    async def unseen() -> None:  # the fold placed it back: its tombstone hides it
        assert doomed not in await shown(h, owner)

    if when == "after_claim":
        ran = around_place(h, monkeypatch, before=remove, after=unseen)
    else:
        ran = around_place(h, monkeypatch, after=remove)
    await strategy.fold(owner)
    assert ran
    monkeypatch.undo()
    expected = [n for n in (5, 4, 3, 2, 1) if n != doomed]
    assert await shown(h, owner) == expected
    assert await chain_numbers(h, owner) == expected
    assert await loose_left(h, owner) == []


async def test_a_removal_before_the_claim_keeps_the_entry_out(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tombstone left by a removal in flight (its first step done), before the fold's read or
    between that read and the claim, is not claimed: the fold never places its entry."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await deliver(h, owner, [1, 2])
    await strategy.inbox.loose.mark_gone(owner, {"s": oid(2)})  # step (a) only, so far
    assert await shown(h, owner) == [1]
    await deliver(h, owner, [3])
    coll = strategy.folder.coll

    class Racing:
        """The collection, with a removal's first step landing right before the claim (after
        the fold read which entries are live)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(coll, name)

        async def update_many(self, *args: Any, **kwargs: Any) -> Any:
            await strategy.inbox.loose.mark_gone(owner, {"s": oid(3)})
            return await coll.update_many(*args, **kwargs)

    monkeypatch.setattr(strategy.folder, "coll", Racing())
    placed: list[ObjectId] = []
    place = strategy.inbox.place

    async def recorded(owner: ObjectId, items: list[Entry], **kwargs: Any) -> int:
        placed.extend(i["s"] for i in items)
        return await place(owner, items, **kwargs)

    monkeypatch.setattr(strategy.inbox, "place", recorded)
    await strategy.fold(owner)
    monkeypatch.undo()
    assert placed == [oid(1)]
    assert await chain_numbers(h, owner) == [1]
    await strategy.inbox.remove_status(owner, oid(2))  # the removals finish: buried
    await strategy.inbox.remove_status(owner, oid(3))
    assert await loose_left(h, owner) == []
    assert await shown(h, owner) == [1]


@pytest.mark.parametrize("crash", ["after_claim", "after_place"])
async def test_a_fold_cut_short_is_finished_by_the_next(
    h: Harness, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    """A removal returns after a fold's claim, then the fold dies before or after its placement
    (which put the removed entry back in the chain): the entry is not shown (its tombstone is
    the dead fold's, which a removal never deletes), every other one is shown once; the next
    fold re-claims the live entries, and once the dead claim is FOLD_CLAIM_S old, pulls the
    removed entry from the chain and deletes its tombstone."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await deliver(h, owner, [1, 2, 3])

    async def remove() -> None:
        await strategy.inbox.remove_status(owner, oid(2))
        if crash == "after_claim":
            raise RuntimeError("killed")

    async def die() -> None:
        raise RuntimeError("killed")

    around_place(h, monkeypatch, before=remove, after=die)
    with pytest.raises(RuntimeError):
        await strategy.fold(owner)
    monkeypatch.undo()
    assert await chain_numbers(h, owner) == ([] if crash == "after_claim" else [3, 2, 1])
    assert await shown(h, owner) == [3, 1]
    assert [d["s"] for d in await loose_left(h, owner)] == [oid(3), oid(2), oid(1)]
    await strategy.fold(owner)  # the live ones; the dead fold's tombstone is too young
    assert await shown(h, owner) == [3, 1]
    tombstones = await loose_left(h, owner)
    assert [d["s"] for d in tombstones] == [oid(2)] and "folding" in tombstones[0]
    old = ObjectId.from_datetime(datetime.now(UTC) - timedelta(seconds=2 * FOLD_CLAIM_S))
    await h.ctx.store.inbox_buckets.update_one(
        {"_id": tombstones[0]["_id"]}, {"$set": {"folding": old, "gone": old}}
    )
    await strategy.fold(owner)
    assert await loose_left(h, owner) == []
    assert await chain_numbers(h, owner) == [3, 1]
    assert await shown(h, owner) == [3, 1]


async def test_two_folds_racing_agree(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second fold of the same owner runs whole between the first's claim and placement: it
    takes over the claims; the first places the same entries (nothing twice) and deletes
    nothing of the second's."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await deliver(h, owner, [1, 2, 3, 4, 5])
    second: list[int] = []

    async def race() -> None:
        second.append(await strategy.fold(owner))

    ran = around_place(h, monkeypatch, before=race)
    first = await strategy.fold(owner)
    assert len(ran) == 2 and second == [5] and first == 0
    monkeypatch.undo()
    assert await chain_numbers(h, owner) == [5, 4, 3, 2, 1]
    assert await loose_left(h, owner) == []
    assert await shown(h, owner) == [5, 4, 3, 2, 1]


async def test_a_retried_fan_out_adds_nothing(h: Harness) -> None:
    """Loose or folded, a repeated delivery of a status shows it once."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await deliver(h, owner, [1, 2])
    assert await strategy.inbox.loose.insert([owner], item(2, owner)) == 0  # still loose
    await strategy.fold(owner)
    assert await strategy.inbox.loose.insert([owner], item(2, owner)) == 1  # folded meanwhile
    assert await shown(h, owner) == [2, 1]
    await strategy.fold(owner)
    assert await chain_numbers(h, owner) == [2, 1]
    assert await loose_left(h, owner) == []


@pytest.mark.parametrize("timeline_max", [SMALL_MAX])
async def test_timeline_max_is_exact_with_loose_entries_before_any_fold(h: Harness) -> None:
    """A chain at TIMELINE_MAX and newer loose entries: every read shows the TIMELINE_MAX
    newest of both (deep `before` pages too, which must not show the chain's oldest entries
    now pushed out), a tombstone hides its status in the chain, and the fold trims the chain
    to the same."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await strategy.inbox.place(owner, [item(n, owner) for n in range(1, SMALL_MAX + 1)])
    assert await shown(h, owner) == list(range(SMALL_MAX, 0, -1))
    await deliver(h, owner, [10, 11])
    expected = [11, 10, 6, 5, 4, 3]
    assert await shown(h, owner) == expected
    assert (await strategy.read(owner, limit=2, before=oid(4))).items[0].id == oid(3)
    assert not (await strategy.read(owner, limit=2, before=oid(3))).items
    await strategy.inbox.loose.mark_gone(owner, {"s": oid(5)})  # a removal in flight
    await strategy.inbox.loose.insert([owner], item(5, owner))  # no loose copy: a duplicate
    assert 5 in await shown(h, owner)  # no loose entry of 5 existed to tombstone
    await strategy.inbox.remove_status(owner, oid(5))
    assert await shown(h, owner) == [11, 10, 6, 4, 3, 2]
    await strategy.fold(owner)
    assert await chain_numbers(h, owner) == [11, 10, 6, 4, 3, 2]
    assert await shown(h, owner) == [11, 10, 6, 4, 3, 2]


@pytest.mark.parametrize("inbox_bucket_size", [50])  # a head of at least 25 after splits
async def test_a_first_page_is_one_query_over_the_head_and_few_loose_entries(
    h: Harness,
) -> None:
    """A first page is one query, the head and the newest LOOSE_READ + 1 loose entries of one
    index range; a read that meets more than LOOSE_READ asks for a fold, which the next fold
    pass does whatever the entries' age, so the next first page's query examines at most the
    head and LOOSE_READ + 1 loose entries on any server (the embedded server sorts the whole
    range in memory; mongod reads it in index order)."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await strategy.inbox.place(owner, [item(n, owner) for n in range(1, 4)])
    many = sorted(ObjectId() for _ in range(2 * LOOSE_READ))  # just posted: young
    await h.ctx.store.inbox_buckets.insert_many(
        [
            {"owner_id": owner, "hi": MAX_ID, "s": s, "items": [{**item(0, owner), "s": s}]}
            for s in many
        ]
    )
    query = await strategy.first_page_query(owner, 20)
    assert query.filter == {"owner_id": owner, "hi": MAX_ID}
    assert (query.sort, query.limit) == ([("s", -1)], 1 + LOOSE_READ + 1)
    with counting() as finds:
        page = await strategy.read(owner, limit=20)
    assert finds.queries == ["inbox_buckets"]  # the head range, and nothing else
    assert [v.id for v in page.items] == many[::-1][:20]
    assert len(await loose_left(h, owner)) == len(many) + 1  # and a fold request
    assert await fold_due(strategy, datetime.now(UTC)) == len(many) + 1  # young, but asked
    assert await loose_left(h, owner) == []
    explained = await explain_page(h.ctx.store.db, await strategy.first_page_query(owner, 20))
    assert explained.docs_examined <= 1 + LOOSE_READ + 1, explained
    with counting() as finds:
        again = await strategy.read(owner, limit=20)
    assert finds.queries == ["inbox_buckets"]  # one round trip: the head holds the page
    assert again.items == page.items
    assert await strategy.timeline_ids(owner) == [*many[::-1], oid(3), oid(2), oid(1)]


async def test_the_fold_pass_folds_only_what_is_old_enough(h: Harness) -> None:
    """An owner with an entry older than FOLD_AGE_S is folded (all of their entries); an owner
    with young ones only waits for a later pass."""
    owner, waiting = ObjectId(), ObjectId()
    strategy = strategy_of(h)
    now = datetime.now(UTC)
    old = ObjectId.from_datetime(now - timedelta(seconds=2 * FOLD_AGE_S))
    young = ObjectId.from_datetime(now)
    for who, s in ((owner, old), (owner, young), (waiting, young)):
        entry = {"s": s, "a": who, "n": "someone", "t": "x", "c": now}
        await strategy.inbox.loose.insert([who], entry)
    assert await fold_due(strategy, now) == 2
    assert await loose_left(h, owner) == []
    assert (await strategy.inbox.chain(owner)).ids() == [young, old]
    assert [d["s"] for d in await loose_left(h, waiting)] == [young]
    assert await fold_due(strategy, now) == 0
    assert await fold_due(strategy, now + timedelta(seconds=2 * FOLD_AGE_S)) == 1


def loose_entries_migration() -> Any:
    path = MIGRATIONS_DIR / "20261206180000_inbox_loose_entries.py"
    spec = importlib.util.spec_from_file_location("inbox_loose_entries", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def index_names(h: Harness) -> set[str]:
    return {i["name"] async for i in await h.ctx.store.inbox_buckets.list_indexes()}


async def test_the_migration_carries_a_chain_of_the_previous_layout_over_and_back(
    h: Harness,
) -> None:
    """A chain as the previous layout wrote it (heads without `s`, the unique (owner_id, hi)
    index): forward marks the heads and swaps the indexes, and the timeline reads the same and
    takes loose entries; backward carries live loose entries into the chain and drops
    tombstones; forward again restores the layout."""
    owner = ObjectId()
    strategy = strategy_of(h)
    coll = h.ctx.store.inbox_buckets
    for name in ("owner_id_1_hi_1_s_1", "hi_1_s_1"):
        await coll.drop_index(name)
    await coll.create_index([("owner_id", 1), ("hi", 1)], unique=True)
    head = [item(n, owner) for n in (5, 4, 3)]
    await coll.insert_one(
        {"_id": owner, "owner_id": owner, "hi": MAX_ID, "lo": oid(3), "items": head}
        | {"count": 5, "v": 2}
    )
    lower = [item(n, owner) for n in (2, 1)]
    await coll.insert_one({"owner_id": owner, "hi": oid(3), "lo": MIN_ID, "items": lower, "v": 1})
    # Before the migration the new version refuses to start, and a delivery fails loudly
    # instead of taking the old index's refusal for a retry's duplicate.
    with pytest.raises(LayoutOutdated):
        await strategy.ensure_indexes()
    with pytest.raises(LayoutOutdated):
        await strategy.inbox.loose.insert([owner], item(6, owner))
    migration = loose_entries_migration()
    assert await migration.forward(h.ctx.store.db) == 1
    await strategy.ensure_indexes()
    assert {"owner_id_1_hi_1_s_1", "hi_1_s_1"} <= await index_names(h)
    assert "owner_id_1_hi_1" not in await index_names(h)
    assert await shown(h, owner) == [5, 4, 3, 2, 1]
    await deliver(h, owner, [6, 7])  # refused by the old unique index
    assert await shown(h, owner) == [7, 6, 5, 4, 3, 2, 1]
    assert await migration.forward(h.ctx.store.db) == 0  # nothing left to do
    await strategy.inbox.loose.mark_gone(owner, {"s": oid(7)})  # a removal in flight
    assert await migration.backward(h.ctx.store.db) == 1
    assert "owner_id_1_hi_1" in await index_names(h)
    assert await loose_left(h, owner) == []
    stored = await coll.find_one({"_id": owner})
    assert stored is not None and "s" not in stored and stored["count"] == 6
    assert [i["s"] for i in stored["items"]] == [oid(6), oid(5), oid(4), oid(3)]
    assert await migration.forward(h.ctx.store.db) == 1
    assert await shown(h, owner) == [6, 5, 4, 3, 2, 1]
    await strategy.fold(owner)
    assert await chain_numbers(h, owner) == [6, 5, 4, 3, 2, 1]


async def test_owners_folded_together_keep_a_busy_ones_claims(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass folds its owners together; one whose placement keeps meeting concurrent changes
    keeps its loose entries (claimed, shown as before) while the others are folded, and the
    pass reports it; the next fold takes it over."""
    busy, calm = ObjectId(), ObjectId()
    strategy = strategy_of(h)
    await deliver(h, busy, [1, 2])
    await deliver(h, calm, [3, 4])
    place = strategy.inbox.place

    async def contended(owner: ObjectId, items: list[Entry], **kwargs: Any) -> int:
        if owner == busy:
            raise Conflict("kept changing")
        return await place(owner, items, **kwargs)

    monkeypatch.setattr(strategy.inbox, "place", contended)
    with pytest.raises(Conflict):
        await strategy.fold_many([busy, calm])
    monkeypatch.undo()
    assert await loose_left(h, calm) == []
    assert await chain_numbers(h, calm) == [4, 3]
    assert all("folding" in d for d in await loose_left(h, busy))
    assert await shown(h, busy) == [2, 1]
    assert await fold_due(strategy, datetime.now(UTC) + timedelta(days=1)) == 2
    assert await chain_numbers(h, busy) == [2, 1]
    assert await loose_left(h, busy) == []
