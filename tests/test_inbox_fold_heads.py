"""The fold's one-write path (app/strategies/inbox_buckets/heads.py): claimed entries go into
the heads that have room by one pipeline update per batch, each distinct entry sent once; the
update re-checks each head's conditions as it writes it (room, range, not there yet, not
sealed), raises `count` and moves `v` with the entries; a full head is split on the server
first (no stored entry sent), by the split protocol (lower part first, cut on the version); what
a head refuses is placed by `Inbox.place`; a removal between the claim and the head write, or
after it, is never shown; a fold cut short after the head write is finished by the next one,
which adds nothing twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bson
import pytest
from bson import ObjectId
from pymongo import monitoring
from pymongo.errors import OperationFailure

from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.chain import MAX_ID, MIN_ID, Entry
from app.strategies.inbox_buckets.heads import HEAD_FIELDS, fill_pipeline, heads_filter, split
from tests.harness import Harness, listen_to_clients
from tests.test_inbox_fold import chain_numbers, deliver, item, loose_left, oid, shown

SIZE = 6
pytestmark = pytest.mark.parametrize("strategy", ["inbox_buckets"])


@pytest.fixture
def inbox_bucket_size() -> int:
    return SIZE


class Writes(monitoring.CommandListener):
    """The write commands sent while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name in ("insert", "update", "delete"):
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


WRITES = Writes()


@pytest.fixture(autouse=True)
def counted_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    listen_to_clients(monkeypatch, WRITES)


@contextmanager
def recording() -> Iterator[Writes]:
    WRITES.on, WRITES.sent = True, []
    try:
        yield WRITES
    finally:
        WRITES.on = False


def strategy_of(h: Harness) -> InboxBuckets:
    strategy = h.ctx.strategy
    assert isinstance(strategy, InboxBuckets)
    return strategy


async def head_of(h: Harness, owner: ObjectId) -> dict[str, Any]:
    head = await strategy_of(h).inbox.bucket(owner, MAX_ID)
    assert head is not None
    return head


async def with_head(h: Harness, owner: ObjectId, numbers: list[int]) -> None:
    """A chain for `owner` holding `numbers` (placed directly: no loose entries)."""
    await strategy_of(h).inbox.place(owner, [item(n, owner) for n in numbers])


def around_heads(
    h: Harness,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
) -> list[bool]:
    """Run `before()` / `after()` once, around the next fold's head write (after its claim,
    before its deletes)."""
    inbox = strategy_of(h).inbox
    fill = inbox.fill_heads
    ran: list[bool] = []

    async def hooked(groups: dict[ObjectId, list[Entry]]) -> dict[ObjectId, dict[str, Any]]:
        first = not ran
        ran.append(True)
        if first and before is not None:
            await before()
        heads = await fill(groups)
        if first and after is not None:
            await after()
        return heads

    monkeypatch.setattr(inbox, "fill_heads", hooked)
    return ran


async def test_a_post_reaching_many_heads_is_sent_once(h: Harness) -> None:
    """Three owners with room in their heads receive the same two statuses: one fold of them
    writes the heads with one update that carries each entry's text once (not once per owner),
    no `$push` and no separate `$inc` of `count`; the heads hold them in order, `count` and `v`
    moved with them."""
    owners = [ObjectId() for _ in range(3)]
    strategy = strategy_of(h)
    for owner in owners:
        await with_head(h, owner, [1, 2])
    versions = [(await head_of(h, o))["v"] for o in owners]
    for n in (3, 4):
        status = item(n, owners[0])
        status["t"] = f"the one text of status {n}"
        assert await strategy.inbox.loose.insert(owners, status) == 3
    with recording() as writes:
        assert await strategy.fold_many(owners) == 6
    updates = [u for c in writes.sent if "update" in c for u in c["updates"]]
    pipelines = [u for u in updates if isinstance(u["u"], list)]
    assert len(pipelines) == 1
    assert not [u for u in updates if isinstance(u["u"], dict) and "$push" in u["u"]]
    assert not [
        u for u in updates if isinstance(u["u"], dict) and "count" in u["u"].get("$inc", {})
    ]
    sent = b"".join(bson.encode(c) for c in writes.sent)
    assert sent.count(b"the one text of status 3") == 1
    assert sent.count(b"the one text of status 4") == 1
    for owner, v in zip(owners, versions, strict=True):
        head = await head_of(h, owner)
        assert [int(str(i["s"]), 16) for i in head["items"]] == [4, 3, 2, 1]
        assert head["count"] == 4 and head["v"] == v + 1
        assert "_fold_new" not in head and "_fold_fits" not in head
        assert await shown(h, owner) == [4, 3, 2, 1]
        assert await loose_left(h, owner) == []


@pytest.mark.parametrize("refusal", ["no_room", "below_range", "present", "sealed"])
async def test_the_update_refuses_a_head_that_changed_since_the_look(
    h: Harness, refusal: str
) -> None:
    """The pipeline's own conditions, as the server writes each head (a concurrent change may
    land between the fold's read of the heads and its update): a head without room for all,
    one whose range no longer holds an entry, one that holds an entry already and a sealed one
    are left exactly as they were; a head beside them in the same update takes its entries."""
    strategy = strategy_of(h)
    coll = strategy.inbox.coll
    refused, taken = ObjectId(), ObjectId()
    await with_head(h, taken, [10])
    base = {"no_room": [10, 11, 12, 13, 14], "below_range": [10], "present": [10, 15]}
    await with_head(h, refused, base.get(refusal, [10]))
    if refusal == "below_range":
        await coll.update_one({"_id": refused}, {"$set": {"lo": oid(16)}})
    if refusal == "sealed":
        await coll.update_one({"_id": refused}, {"$set": {"sealed": True}})
    before = await head_of(h, refused)
    groups = {refused: [item(15, refused), item(20, refused)], taken: [item(20, taken)]}
    await coll.update_many(heads_filter(list(groups)), fill_pipeline(groups, SIZE))
    assert await head_of(h, refused) == before
    head = await head_of(h, taken)
    assert [int(str(i["s"]), 16) for i in head["items"]] == [20, 10]
    assert head["count"] == 2


async def test_a_repeated_head_write_adds_nothing(h: Harness) -> None:
    """The same update twice (a fold cut short after it, then retried): the second changes
    nothing, not even `count` or `v`."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1])
    groups = {owner: [item(2, owner), item(3, owner)]}
    coll = strategy.inbox.coll
    await coll.update_many(heads_filter([owner]), fill_pipeline(groups, SIZE))
    once = await head_of(h, owner)
    assert once["count"] == 3
    await coll.update_many(heads_filter([owner]), fill_pipeline(groups, SIZE))
    assert await head_of(h, owner) == once


async def test_a_text_that_looks_like_an_expression_is_stored_as_sent(h: Harness) -> None:
    """Entries travel as literals: a text starting with `$` (or a `$$` variable) is a text."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1])
    odd = item(2, owner)
    odd["t"], odd["n"] = "$items", "$$ROOT"
    assert await strategy.inbox.loose.insert([owner], odd) == 1
    await strategy.fold(owner)
    head = await head_of(h, owner)
    assert head["items"][0]["t"] == "$items" and head["items"][0]["n"] == "$$ROOT"
    page = await strategy.read(owner, limit=5)
    assert page.items[0].text == "$items"


async def test_what_a_head_cannot_take_is_placed_as_before(h: Harness) -> None:
    """Owners whose heads are missing or full, folded with one whose head has room: the first
    gets a head by `place`, the full one a split, the other the head write; all end in order,
    each entry once."""
    roomy, full, headless = ObjectId(), ObjectId(), ObjectId()
    strategy = strategy_of(h)
    await with_head(h, roomy, [1])
    await with_head(h, full, [1, 2, 3, 4, 5])
    await deliver(h, roomy, [7, 8])
    await deliver(h, full, [7, 8])
    await deliver(h, headless, [7, 8])
    assert await strategy.fold_many([roomy, full, headless]) == 6
    assert await chain_numbers(h, roomy) == [8, 7, 1]
    assert await chain_numbers(h, full) == [8, 7, 5, 4, 3, 2, 1]
    assert len((await strategy.inbox.chain(full)).buckets) == 2  # split to make room
    assert await chain_numbers(h, headless) == [8, 7]
    for owner in (roomy, full, headless):
        assert await loose_left(h, owner) == []
        assert (await head_of(h, owner))["count"] == len(await chain_numbers(h, owner))


@pytest.mark.parametrize("when", ["before_write", "after_write"])
async def test_a_removal_around_the_head_write_is_never_shown(
    h: Harness, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A delete that returns after the fold's claim, before or after the head write put its
    entry in the head: no read shows it from then on; the fold pulls it from the head and
    deletes its tombstone; every other entry ends in the head once."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1])
    await deliver(h, owner, [2, 3, 4])

    async def remove() -> None:
        await strategy.inbox.remove_status(owner, oid(3))
        assert 3 not in await shown(h, owner)

    async def unseen() -> None:
        assert 3 not in await shown(h, owner)

    if when == "before_write":
        ran = around_heads(h, monkeypatch, before=remove, after=unseen)
    else:
        ran = around_heads(h, monkeypatch, after=remove)
    await strategy.fold(owner)
    assert ran
    monkeypatch.undo()
    assert await shown(h, owner) == [4, 2, 1]
    assert await chain_numbers(h, owner) == [4, 2, 1]
    assert await loose_left(h, owner) == []
    assert (await head_of(h, owner))["count"] >= 3  # over-states at worst, never under


async def test_a_fold_cut_short_after_the_head_write_is_finished_by_the_next(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold dies right after its head write (its claims still there): every entry is shown
    once meanwhile; the next fold re-claims them, adds nothing twice and deletes them."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1])
    await deliver(h, owner, [2, 3])

    async def die() -> None:
        raise RuntimeError("killed")

    around_heads(h, monkeypatch, after=die)
    with pytest.raises(RuntimeError):
        await strategy.fold(owner)
    monkeypatch.undo()
    assert await chain_numbers(h, owner) == [3, 2, 1]
    assert await shown(h, owner) == [3, 2, 1]
    assert len(await loose_left(h, owner)) == 2
    v = (await head_of(h, owner))["v"]
    assert await strategy.fold(owner) == 2
    assert await chain_numbers(h, owner) == [3, 2, 1]
    assert (await head_of(h, owner))["v"] == v  # nothing written twice
    assert await loose_left(h, owner) == []
    assert await shown(h, owner) == [3, 2, 1]


@pytest.mark.parametrize("timeline_max", [4])
async def test_a_head_write_past_timeline_max_is_trimmed(h: Harness) -> None:
    """Entries the head takes that carry the timeline past TIMELINE_MAX: the fold trims it
    (from the count it read back), and reads never showed more."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1, 2, 3])
    await deliver(h, owner, [4, 5])
    assert await shown(h, owner) == [5, 4, 3, 2]
    await strategy.fold(owner)
    assert await chain_numbers(h, owner) == [5, 4, 3, 2]
    assert await shown(h, owner) == [5, 4, 3, 2]
    assert (await head_of(h, owner)).get("trimmed")


async def test_a_head_without_room_is_split_on_the_server(h: Harness) -> None:
    """Owners whose heads are full receive a status: the fold splits each head on the server
    (the lower part inserted by an aggregate's `$merge`, the head cut by a pipeline update) and
    writes the entry into it, sending no stored entry again: the only entry text in the write
    commands is the new one's, once. Each part holds at least half a bucket, the lower part
    names its parent and the version it was cut from, `count` is the chain's."""
    owners = [ObjectId() for _ in range(2)]
    strategy = strategy_of(h)
    for owner in owners:
        await with_head(h, owner, [1, 2, 3, 4, 5, 6])
    versions = [(await head_of(h, o))["v"] for o in owners]
    status = item(9, owners[0])
    status["t"] = "the new status"
    assert await strategy.inbox.loose.insert(owners, status) == 2
    with recording() as writes:
        assert await strategy.fold_many(owners) == 2
    sent = b"".join(bson.encode(c) for c in writes.sent)
    assert sent.count(b"the new status") == 1
    assert b"status 1" not in sent and b"status 6" not in sent
    assert not [c for c in writes.sent if "insert" in c]  # the lower parts: by the aggregates
    for owner, v in zip(owners, versions, strict=True):
        chain = await strategy.inbox.chain(owner)
        head, lower = chain.buckets
        assert [int(str(i["s"]), 16) for i in head["items"]] == [9, 6, 5, 4]
        assert [int(str(i["s"]), 16) for i in lower["items"]] == [3, 2, 1]
        assert lower["hi"] == head["lo"] == oid(4) and lower["lo"] == MIN_ID
        assert lower["p"] == owner and lower["pv"] == v and head["v"] == v + 2
        assert head["count"] == 7 and not chain.orphans
        assert await shown(h, owner) == [9, 6, 5, 4, 3, 2, 1]


async def test_a_split_of_a_head_that_changed_since_the_look_leaves_an_orphan_only(
    h: Harness,
) -> None:
    """A head read, then changed (its version moved) before the split: the split's lower part
    is not inserted (its `$match` is on the version) and the cut is refused; a lower part
    inserted by a split whose cut then failed is an orphan the next placement deletes."""
    owner = ObjectId()
    strategy = strategy_of(h)
    coll = strategy.inbox.coll
    await with_head(h, owner, [1, 2, 3, 4, 5, 6])
    stale = await coll.find_one({"_id": owner}, HEAD_FIELDS)
    assert stale is not None
    await coll.update_one({"_id": owner}, {"$inc": {"v": 1}})
    assert not await split(coll, stale, oid(4))
    assert await coll.count_documents({"owner_id": owner}) == 1
    fresh = await coll.find_one({"_id": owner}, HEAD_FIELDS)
    assert fresh is not None

    class CutFails:
        """The collection, with the head's version moving between the insert and the cut."""

        def __getattr__(self, name: str) -> Any:
            return getattr(coll, name)

        async def update_one(self, *args: Any, **kwargs: Any) -> Any:
            await coll.update_one({"_id": owner}, {"$inc": {"v": 1}})
            return await coll.update_one(*args, **kwargs)

    assert not await split(CutFails(), fresh, oid(4))  # type: ignore[arg-type]
    chain = await strategy.inbox.chain(owner)
    assert len(chain.buckets) == 1 and len(chain.orphans) == 1
    assert await shown(h, owner) == [6, 5, 4, 3, 2, 1]
    await strategy.inbox.place(owner, [item(7, owner)])
    chain = await strategy.inbox.chain(owner)
    assert not chain.orphans
    assert await chain_numbers(h, owner) == [7, 6, 5, 4, 3, 2, 1]


async def test_where_merge_cannot_write_the_split_is_placed_as_before(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses the split's `$merge` (a sharded collection's `on` must hold the
    shard key): the fold places the entries by `Inbox.place`, which splits as it always did."""
    owner = ObjectId()
    strategy = strategy_of(h)
    coll = strategy.inbox.coll
    await with_head(h, owner, [1, 2, 3, 4, 5, 6])
    await deliver(h, owner, [9])

    class Sharded:
        def __getattr__(self, name: str) -> Any:
            return getattr(coll, name)

        async def aggregate(self, *args: Any, **kwargs: Any) -> Any:
            raise OperationFailure("$merge 'on' fields must include the shard key", 51190)

    monkeypatch.setattr(strategy.inbox, "coll", Sharded())
    assert await strategy.fold(owner) == 1
    monkeypatch.undo()
    assert await chain_numbers(h, owner) == [9, 6, 5, 4, 3, 2, 1]
    assert len((await strategy.inbox.chain(owner)).buckets) == 2
    assert await loose_left(h, owner) == []


async def test_two_folds_racing_on_the_heads_agree(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second fold of the same owner runs whole between the first's claim and its head
    write: it takes over the claims and writes the head; the first finds its entries there,
    adds nothing (no second write of the head) and deletes nothing of the second's."""
    owner = ObjectId()
    strategy = strategy_of(h)
    await with_head(h, owner, [1])
    await deliver(h, owner, [2, 3])
    second: list[int] = []

    async def race() -> None:
        second.append(await strategy.fold(owner))

    ran = around_heads(h, monkeypatch, before=race)
    first = await strategy.fold(owner)
    assert len(ran) == 2 and second == [2] and first == 0
    monkeypatch.undo()
    head = await head_of(h, owner)
    assert [int(str(i["s"]), 16) for i in head["items"]] == [3, 2, 1]
    assert head["count"] == 3
    assert await loose_left(h, owner) == []
    assert await shown(h, owner) == [3, 2, 1]
