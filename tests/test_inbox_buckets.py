"""inbox_buckets' own invariants, beyond the behaviour suite: buckets never exceed
INBOX_BUCKET_SIZE, form one chain without duplicates, a repeated fan-out or an interrupted split
changes nothing, backfills land in order across bucket edges, a page reads at most 2 buckets
however long the timeline, and a changed INBOX_BUCKET_SIZE needs no rebuild."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bson
import pytest
from bson import ObjectId
from pymongo import monitoring

from app import cursors
from app.api.schemas import MAX_TEXT_CHARS
from app.settings import MAX_INBOX_BUCKET_SIZE
from app.strategies.inbox_buckets import InboxBuckets
from app.strategies.inbox_buckets.chain import MAX_ID, entry
from benchmarks.explain import explain_page
from entrypoints.migrate import MIGRATIONS_DIR
from tests import harness
from tests.harness import Harness, listen_to_clients, running

SIZE = 3
pytestmark = pytest.mark.parametrize("strategy", ["inbox_buckets"])


@pytest.fixture
def inbox_bucket_size() -> int:
    return SIZE


def ref(status_id: ObjectId, author_id: ObjectId) -> dict[str, Any]:
    """An entry of ids only (as written before entries carried the page's fields): placement
    needs no more, and pages hydrate it."""
    return {"s": status_id, "a": author_id}


def inbox(h: Harness) -> InboxBuckets:
    strategy = h.ctx.strategy
    assert isinstance(strategy, InboxBuckets)
    return strategy


async def uid(h: Harness, handle: str) -> ObjectId:
    doc = await h.ctx.store.users.find_one({"handle": handle})
    assert doc is not None
    return ObjectId(doc["_id"])


async def assert_sound(h: Harness, owner: ObjectId, size: int = SIZE) -> list[ObjectId]:
    """Once its loose entries are folded in, every bucket of `owner` is on its chain, within its
    size and range, newest first, and no status is held twice. Returns the chain's ids."""
    await inbox(h).fold(owner)
    chain = await inbox(h).inbox.chain(owner)
    assert chain.loose == []
    assert chain.orphans == []
    ids = chain.ids()
    assert len(ids) == len(set(ids)), "a status held twice"
    assert ids == sorted(ids, reverse=True)
    for bucket in chain.buckets:
        assert len(bucket["items"]) <= size
        assert all(bucket["lo"] <= i["s"] < bucket["hi"] for i in bucket["items"])
    return ids


async def test_buckets_stay_within_size_and_fan_out_twice_adds_nothing(h: Harness) -> None:
    await h.user("ann")
    await h.user("bob")
    await h.befriend("ann", "bob")
    posted = [(await h.post("bob", f"b{i}"))["id"] for i in range(10)]
    await h.drain()
    bob, ann = await uid(h, "bob"), await uid(h, "ann")
    expected = [ObjectId(i) for i in reversed(posted)]
    assert await assert_sound(h, ann) == expected
    assert len((await inbox(h).inbox.chain(ann)).buckets) >= 10 // SIZE
    # A retried (or resumed) fan-out of every status: nothing is added twice.
    for status_id in posted:
        await inbox(h).apply_posted(bob, ObjectId(status_id))
    assert await assert_sound(h, ann) == expected
    assert await assert_sound(h, bob) == expected


async def test_a_fan_out_arriving_out_of_order_is_sorted_in_one_write(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers (or API processes) can deliver an older status after a newer one: each is
    one loose insert (no placement on the post's path), and the fold sorts both into the
    chain."""
    for handle in ("ann", "bob", "cat"):
        await h.user(handle)
    await h.befriend("ann", "bob")
    await h.befriend("ann", "cat")
    mine = ObjectId((await h.post("ann", "her head exists"))["id"])
    await h.drain()
    older = ObjectId((await h.post("bob", "older"))["id"])
    newer = ObjectId((await h.post("cat", "newer"))["id"])
    ann = await uid(h, "ann")

    async def no_place(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("took the general placement")

    monkeypatch.setattr(inbox(h).inbox, "place", no_place)
    await inbox(h).apply_posted(await uid(h, "cat"), newer)  # first: put first
    await inbox(h).apply_posted(await uid(h, "bob"), older)  # then: sorted in below it
    monkeypatch.undo()
    assert await assert_sound(h, ann) == [newer, older, mine]
    await h.drain()  # the events again: nothing added
    assert await assert_sound(h, ann) == [newer, older, mine]


async def test_backfill_lands_in_order_across_bucket_edges(h: Harness) -> None:
    for handle in ("ann", "bob", "cat"):
        await h.user(handle)
    await h.befriend("ann", "bob")
    # Interleaved posts: cat's older statuses must slot between bob's in ann's full buckets.
    posted = []
    for i in range(6):
        posted.append((await h.post("bob", f"b{i}"))["id"])
        posted.append((await h.post("cat", f"c{i}"))["id"])
    await h.drain()
    ann = await uid(h, "ann")
    await h.befriend("ann", "cat")
    await h.drain()
    assert await assert_sound(h, ann) == [ObjectId(i) for i in reversed(posted)]
    assert await h.timeline_ids("ann", page=2) == list(reversed(posted))


async def test_an_interrupted_split_is_invisible_and_collected(h: Harness) -> None:
    await h.user("ann")
    posted = [(await h.post("ann", f"a{i}"))["id"] for i in range(SIZE)]
    ann = await uid(h, "ann")
    await inbox(h).fold(ann)
    head = await inbox(h).inbox.bucket(ann, MAX_ID)
    assert head is not None and len(head["items"]) == SIZE
    # A crash between a split's insert of the lower part and the cut of the head: the copy
    # holds entries the head still holds, inside the head's range.
    lower = head["items"][1:]
    await h.ctx.store.inbox_buckets.insert_one(
        {"owner_id": ann, "hi": lower[0]["s"], "lo": head["lo"], "items": lower, "v": 0, "pv": -5}
    )
    assert await h.timeline_ids("ann", page=1) == list(reversed(posted))
    # The next post splits the head: the stale copy goes, the chain is whole.
    posted.append((await h.post("ann", "more"))["id"])
    assert await assert_sound(h, ann) == [ObjectId(i) for i in reversed(posted)]


def oid(n: int) -> ObjectId:
    """A status id of our choosing, so that a test can place entries between others."""
    return ObjectId(f"{n:024x}")


def racing_split(h: Harness, monkeypatch: pytest.MonkeyPatch, race: Any) -> list[bool]:
    """Run `race()` once, right after the first lower part of a split is inserted (before the
    split cuts its parent above it): the window in which a concurrent handler sees it as an
    orphan."""
    placement = inbox(h).inbox
    insert = placement._insert_lower
    raced: list[bool] = []

    async def racing_insert(*args: Any) -> bool:
        done = bool(await insert(*args))
        if not raced:
            raced.append(True)
            await race()
        return done

    monkeypatch.setattr(placement, "_insert_lower", racing_insert)
    return raced


async def test_a_split_racing_another_split_of_its_bucket_is_collected(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Racing workers' Conflict (seed 22 of test_concurrent_workers): two splits of one head
    from the same version; the second wins, so the first's lower part is dead, but it lay in
    the new lower bucket's range, and was judged by that bucket's version (0, not the head's):
    kept, it blocked every later split cutting at its key until that version passed the
    head's, and the placement gave up with Conflict (its fan-out left readers without it)."""
    owner, placement = ObjectId(), inbox(h).inbox
    await placement.place(owner, [ref(oid(n), owner) for n in (4, 2, 1)])  # full head
    # A head that has seen many writes: its version is far past a new bucket's.
    await h.ctx.store.inbox_buckets.update_one({"_id": owner}, {"$set": {"v": 40}})
    raced = racing_split(h, monkeypatch, lambda: placement.place(owner, [ref(oid(5), owner)]))
    assert await placement.place(owner, [ref(oid(n), owner) for n in (3, 0)]) == 2
    assert raced
    assert await assert_sound(h, owner) == [oid(n) for n in (5, 4, 3, 2, 1, 0)]


async def test_a_lower_part_below_its_parents_range_survives_a_collection(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older entries merged into an emptied head (its buckets below went with an unfriend's
    removals) make a lower part below the head's range. A concurrent placement with nothing
    new (a rebuild's) collects orphans meanwhile: finding no bucket around it, it deleted the
    live part, and the cut that followed linked the head to nothing (entries lost)."""
    owner, placement = ObjectId(), inbox(h).inbox
    await h.ctx.store.inbox_buckets.insert_one(
        {"_id": owner, "owner_id": owner, "hi": MAX_ID, "lo": oid(10), "items": [], "count": 0}
        | {"v": 3}
    )
    raced = racing_split(h, monkeypatch, lambda: placement.place(owner, []))
    assert await placement.place(owner, [ref(oid(n), owner) for n in (3, 2, 1, 0)]) == 4
    assert raced
    assert await assert_sound(h, owner) == [oid(n) for n in (3, 2, 1, 0)]


async def test_a_crashed_splits_copy_does_not_count_as_holding_the_status(h: Harness) -> None:
    """A fan-out that crashed between a split's insert of the lower part (holding the status)
    and the cut leaves the status in that copy only. Its retry, finding the head full, asked
    which readers hold the status: the copy counted, so the reader never got it."""
    await h.user("ann")
    await h.user("bob")
    await h.befriend("ann", "bob")
    await h.drain()
    status = ObjectId((await h.post("bob", "older"))["id"])  # its fan-out has not run yet
    mine = [ObjectId((await h.post("ann", f"a{i}"))["id"]) for i in range(SIZE)]
    ann = await uid(h, "ann")
    await inbox(h).fold(ann)
    head = await inbox(h).inbox.bucket(ann, MAX_ID)
    assert head is not None and [i["s"] for i in head["items"]] == mine[::-1]
    bob = await uid(h, "bob")
    posted = await h.ctx.store.statuses.find_one({"_id": status, "author_id": bob})
    assert posted is not None
    lower = [head["items"][-1], entry(posted)]  # the split a crashed attempt began
    await h.ctx.store.inbox_buckets.insert_one(
        {"owner_id": ann, "hi": head["items"][-2]["s"], "lo": head["lo"], "items": lower}
        | {"v": 0, "p": ann, "pv": head["v"]}
    )
    await h.drain()
    assert await assert_sound(h, ann) == [*mine[::-1], status]


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.on: bool = False
        self.buckets = 0
        self.statuses = 0
        # The projection of each bucket find (None: whole documents).
        self.projections: list[dict[str, Any] | None] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name == "find":
            self.buckets += event.command.get("find") == "inbox_buckets"
            self.statuses += event.command.get("find") == "statuses"
            if event.command.get("find") == "inbox_buckets":
                projection = event.command.get("projection")
                self.projections.append(None if projection is None else dict(projection))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


FINDS = Finds()


def page_finds(cursor: str | None) -> int:
    """The finds a page of up to half a bucket makes: a first page the head range (the head and
    the loose entries, one query) and the bucket below; a `before` page the head range too (the
    loose entries and tombstones below the cursor), the cursor's bucket and the one below."""
    return 2 if cursor is None else 3


@pytest.fixture(autouse=True)
def counted_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    listen_to_clients(monkeypatch, FINDS)


@contextmanager
def counting() -> Iterator[Finds]:
    FINDS.on, FINDS.buckets, FINDS.statuses, FINDS.projections = True, 0, 0, []
    try:
        yield FINDS
    finally:
        FINDS.on = False


@pytest.mark.parametrize("inbox_bucket_size", [10])
async def test_a_page_reads_at_most_two_buckets_of_a_long_timeline(h: Harness) -> None:
    await h.user("ann")
    posted = [(await h.post("ann", f"a{i}"))["id"] for i in range(60)]
    ann = await uid(h, "ann")
    await assert_sound(h, ann, size=10)  # folded: the chain alone
    newest = list(reversed(posted))
    # A page of `limit` items reads at most 1 + ceil((limit + 1) / ceil(size / 2)) buckets (the
    # `+ 1` tells whether there is an older page; a head split leaves half a bucket on each
    # side): 2 whenever limit < size / 2, as the default page of 20 with buckets of 50.
    limit = 4
    cursor: str | None = None
    seen: list[str] = []
    while True:
        with counting() as finds:
            params: dict[str, Any] = {"limit": limit}
            if cursor is not None:
                params["before"] = cursor
            body = await h.timeline("ann", **params)
        assert finds.buckets <= page_finds(cursor), f"the page after {len(seen)} items"
        assert finds.statuses == 0, "entries carry the page: no second round trip"
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == newest
    with counting() as finds:
        await h.timeline("ann", limit=limit, after=cursors.encode(ObjectId(newest[5])))
        assert finds.buckets <= 2
    # What the benchmark explains: the first page's head (no loose entries: all folded).
    explained = await explain_page(h.ctx.store.db, await inbox(h).first_page_query(ann, 10))
    assert explained.docs_examined == 1


@pytest.mark.parametrize("inbox_bucket_size", [4])
async def test_the_unread_count_reads_no_text(h: Harness) -> None:
    """The count walks the chain as a page does, but fetches only what it counts by: ids (and
    authors) and the link to the next bucket, never the entries' texts."""
    await h.user("ann")
    posted = [(await h.post("ann", f"a{i}"))["id"] for i in range(10)]
    await inbox(h).fold(await uid(h, "ann"))
    read_to = {"home": {"last_read_id": posted[1]}}
    assert (await h.client.post("/markers", json=read_to, headers=h.auth("ann"))).status_code == 200
    with counting() as finds:
        r = await h.client.get("/timeline/unread_count", headers=h.auth("ann"))
    assert r.status_code == 200 and r.json()["count"] == 8
    assert finds.buckets >= 2  # the walk went past the head (buckets of 4)
    for projection in finds.projections:
        assert projection is not None, "a bucket was read whole"
        included = {k for k, v in projection.items() if v}
        counted_by = {"items.s", "items.a", "lo", "hi", "_id", "s", "gone", "count"}
        assert included and included <= counted_by, projection


# The removal triggers below: TIMELINE_MAX 24 and buckets of 6, so that the chain holds a few
# buckets and a page of 2 items (3 entries read: the `+ 1` says whether more follow) fits in the
# ceil(6 / 2) = 3 entries every bucket but the head and the last one keeps. Before the bound,
# either trigger left 17 documents after 60 more posts, 11 of them empty.
SMALL_MAX = 24
SMALL_SIZE = 6
SMALL_LIMIT = 2
# Posts after the removal: enough for the window to turn over many times (each post trims one).
LATER_POSTS = 60


def chain_bound(timeline_max: int, size: int) -> int:
    """The documents a reader's chain may hold, whatever was removed: every bucket but the head
    and the last one holds at least half a bucket (app/strategies/inbox_removals.py)."""
    return -(-timeline_max // (size // 2)) + 2


async def assert_bounded(h: Harness, owner: ObjectId, handle: str) -> None:
    """The chain stays within `chain_bound`, half full but at its ends, and every page of the
    timeline, first to last, reads at most two buckets."""
    assert_sound_ids = await assert_sound(h, owner, size=SMALL_SIZE)
    chain = await inbox(h).inbox.chain(owner)
    docs = await h.ctx.store.inbox_buckets.count_documents({"owner_id": owner})
    assert docs == len(chain.buckets) <= chain_bound(SMALL_MAX, SMALL_SIZE), docs
    middle = chain.buckets[1:-1]
    assert all(len(b["items"]) >= SMALL_SIZE // 2 for b in middle), [
        len(b["items"]) for b in chain.buckets
    ]
    cursor: str | None = None
    seen: list[str] = []
    while True:
        params: dict[str, Any] = {"limit": SMALL_LIMIT}
        if cursor is not None:
            params["before"] = cursor
        with counting() as finds:
            body = await h.timeline(handle, **params)
        assert finds.buckets <= page_finds(cursor), f"the page after {len(seen)} items"
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in assert_sound_ids]


@pytest.mark.parametrize(("timeline_max", "inbox_bucket_size"), [(SMALL_MAX, SMALL_SIZE)])
async def test_an_unfriend_that_empties_a_middle_bucket_leaves_the_chain_bounded(
    h: Harness,
) -> None:
    for handle in ("ann", "bob", "cat"):
        await h.user(handle)
    await h.befriend("ann", "bob")
    await h.befriend("ann", "cat")
    for i in range(SMALL_SIZE):
        await h.post("cat", f"c{i}")
    for i in range(SMALL_SIZE):  # a bucket of bob's alone, between cat's
        await h.post("bob", f"b{i}")
    for i in range(SMALL_SIZE):
        await h.post("cat", f"d{i}")
    await h.drain()
    ann = await uid(h, "ann")
    bob = await uid(h, "bob")
    chain = await inbox(h).inbox.chain(ann)
    assert any(b["items"] and all(i["a"] == bob for i in b["items"]) for b in chain.buckets[1:-1])
    await h.unfriend("ann", "bob")
    await h.drain()
    await assert_bounded(h, ann, "ann")
    for i in range(LATER_POSTS):
        await h.post("cat", f"e{i}")
        if i % 10 == 9:
            await h.drain()
            await assert_bounded(h, ann, "ann")
    assert len(await assert_sound(h, ann, size=SMALL_SIZE)) == SMALL_MAX


@pytest.mark.parametrize(("timeline_max", "inbox_bucket_size"), [(SMALL_MAX, SMALL_SIZE)])
async def test_deleting_the_posts_of_the_bottom_bucket_leaves_the_chain_bounded(
    h: Harness,
) -> None:
    for handle in ("ann", "cat"):
        await h.user(handle)
    await h.befriend("ann", "cat")
    first = [(await h.post("cat", f"c{i}"))["id"] for i in range(SMALL_SIZE)]
    for i in range(SMALL_SIZE):
        await h.post("cat", f"d{i}")
    await h.drain()
    ann = await uid(h, "ann")
    chain = await inbox(h).inbox.chain(ann)
    bottom = {i["s"] for i in chain.buckets[-1]["items"]}
    assert len(chain.buckets) > 1 and bottom == {ObjectId(i) for i in first}
    for status_id in first:  # every entry of the bottom bucket
        await h.delete("cat", status_id)
    await h.drain()
    await assert_bounded(h, ann, "ann")
    for i in range(LATER_POSTS):
        await h.post("cat", f"e{i}")
        if i % 10 == 9:
            await h.drain()
            await assert_bounded(h, ann, "ann")
    assert len(await assert_sound(h, ann, size=SMALL_SIZE)) == SMALL_MAX


@pytest.mark.parametrize(("timeline_max", "inbox_bucket_size"), [(SMALL_MAX, SMALL_SIZE)])
async def test_a_merge_cut_short_after_its_seal_is_finished_and_loses_no_removal(
    h: Harness,
) -> None:
    """A crash between sealing a bucket and merging it into the one above leaves a sealed
    bucket on the chain: reads see it as before, and a delete of one of its statuses merges
    it first, then removes the status from the bucket that took it."""
    await h.user("ann")
    posted = [(await h.post("ann", f"a{i}"))["id"] for i in range(3 * SMALL_SIZE)]
    ann = await uid(h, "ann")
    await inbox(h).fold(ann)
    chain = await inbox(h).inbox.chain(ann)
    assert len(chain.buckets) >= 3
    middle = chain.buckets[1]
    await h.ctx.store.inbox_buckets.update_one(
        {"_id": middle["_id"]}, {"$set": {"sealed": True}, "$inc": {"v": 1}}
    )
    newest = list(reversed(posted))
    assert await h.timeline_ids("ann", page=SMALL_LIMIT) == newest
    doomed = str(middle["items"][0]["s"])
    await h.delete("ann", doomed)
    await h.drain()
    newest.remove(doomed)
    assert await assert_sound(h, ann, size=SMALL_SIZE) == [ObjectId(i) for i in newest]
    chain = await inbox(h).inbox.chain(ann)
    assert not any(b.get("sealed") for b in chain.buckets)
    assert await h.timeline_ids("ann", page=SMALL_LIMIT) == newest


async def test_a_changed_bucket_size_needs_no_rebuild(h: Harness, mongo_url: str) -> None:
    await h.user("ann")
    posted = [(await h.post("ann", f"a{i}"))["id"] for i in range(7)]
    ann = await uid(h, "ann")
    settings = harness.test_settings(mongo_url, "inbox_buckets", inbox_bucket_size=2)
    settings = settings.model_copy(update={"mongodb_db": h.ctx.settings.mongodb_db})
    async with running(settings) as smaller:
        smaller.tokens.update(h.tokens)
        # Read under the new size: the same timeline from buckets of 3.
        assert await smaller.timeline_ids("ann", page=2) == list(reversed(posted))
        # Buckets are re-cut as they are written: a rebuild leaves none above 2.
        strategy = smaller.ctx.build_strategy("inbox_buckets")
        await strategy.rebuild(ann)
        posted.append((await smaller.post("ann", "more"))["id"])
        assert await assert_sound(smaller, ann, size=2) == [ObjectId(i) for i in reversed(posted)]


async def test_entries_of_ids_only_are_hydrated(h: Harness) -> None:
    """Entries written before they carried the page's fields (ids only) still show: a page
    hydrates them with one query, and leaves out one whose status is gone."""
    await h.user("ann")
    posted = [await h.post("ann", f"a{i}") for i in range(3)]
    ann = await uid(h, "ann")
    await inbox(h).fold(ann)
    before = await h.timeline("ann")
    head = await inbox(h).inbox.bucket(ann, MAX_ID)
    assert head is not None and all(set(i) == {"s", "a", "n", "t", "c"} for i in head["items"])
    bare = [{"s": i["s"], "a": i["a"]} for i in head["items"]]
    gone = ObjectId()  # an id-only entry whose status no longer exists
    await h.ctx.store.inbox_buckets.update_one(
        {"_id": ann}, {"$set": {"items": [{"s": gone, "a": ann}, *bare]}}
    )
    with counting() as finds:
        after = await h.timeline("ann")
    assert finds.statuses == 1
    assert after["items"] == before["items"]
    assert [i["text"] for i in after["items"]] == [p["text"] for p in reversed(posted)]


async def test_a_post_whose_transaction_fails_leaves_no_entry(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries carry the text, so the author's own entry is written only once the post is
    committed: written before (as when entries were ids only), a failed transaction left an
    entry showing a status that never existed."""
    await h.user("ann")
    await h.post("ann", "kept")
    commit = h.ctx.commit

    async def failing(events: list[dict[str, Any]], change: Any) -> Any:
        async def then_fail(session: Any) -> None:
            await change(session)
            raise RuntimeError("the transaction fails after the change")

        return await commit(events, then_fail)

    monkeypatch.setattr(h.ctx, "commit", failing)
    r = await h.client.post("/statuses", json={"text": "lost"}, headers=h.auth("ann"))
    assert r.status_code == 500  # the server's own failure, logged
    monkeypatch.undo()
    shown = [i["text"] for i in (await h.timeline("ann"))["items"]]
    stored = await h.ctx.store.statuses.find({}, {"text": 1}).sort("_id", -1).to_list()
    assert shown == [s["text"] for s in stored]
    assert "kept" in shown


async def test_a_post_deleted_before_its_own_append_is_not_resurrected(h: Harness) -> None:
    """The author's append runs after the commit: a delete that committed and was fanned out
    in between found nothing to remove, so the append undoes itself."""
    await h.user("ann")
    ann = await uid(h, "ann")
    status = {"_id": ObjectId(), "author_id": ann, "author": "ann", "text": "gone"}
    status["created_at"] = ObjectId().generation_time
    await inbox(h).after_post(status)  # no such status in `statuses`: deleted meanwhile
    assert (await inbox(h).inbox.chain(ann)).ids() == []
    assert (await h.timeline("ann"))["items"] == []


def test_a_bucket_of_the_largest_size_and_texts_fits_a_document(strategy: str) -> None:
    """MAX_INBOX_BUCKET_SIZE entries of the longest texts in 4-byte characters, the longest
    handle and the head's bookkeeping encode below MongoDB's 16 MB document limit."""
    text = "\U0001f600" * MAX_TEXT_CHARS
    status = {"_id": ObjectId(), "author_id": ObjectId(), "author": "h" * 30, "text": text}
    status["created_at"] = ObjectId().generation_time
    owner = ObjectId()
    head = {"_id": owner, "owner_id": owner, "hi": MAX_ID, "lo": MAX_ID, "count": 10**6}
    head |= {"v": 10**9, "trimmed": True, "owed": [ObjectId() for _ in range(100)]}
    head["items"] = [entry(status)] * MAX_INBOX_BUCKET_SIZE
    size = len(bson.encode(head))
    assert 8 * 2**20 < size < 16 * 2**20, size


def page_fields_migration() -> Any:
    path = MIGRATIONS_DIR / "20261129220000_inbox_page_fields.py"
    spec = importlib.util.spec_from_file_location("inbox_page_fields", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_migration_fills_entries_of_ids_only(h: Harness) -> None:
    """Buckets written when entries held ids only get the page's fields; an entry whose status
    is gone stays bare; a second run finds nothing to do."""
    await h.user("ann")
    for i in range(2 * SIZE + 1):  # a chain of three buckets
        await h.post("ann", f"a{i}")
    ann = await uid(h, "ann")
    await inbox(h).fold(ann)
    shown = await h.timeline("ann")
    coll = h.ctx.store.inbox_buckets
    gone = {"s": ObjectId(), "a": ann}
    buckets = await coll.find({"owner_id": ann}).to_list()
    assert len(buckets) == 3
    for b in buckets:
        bare = [{"s": i["s"], "a": i["a"]} for i in b["items"]]
        await coll.update_one({"_id": b["_id"]}, {"$set": {"items": bare}})
    await coll.update_one({"_id": ann}, {"$push": {"items": gone}})  # the oldest of the head
    migration = page_fields_migration()
    assert await migration.fill_page_fields(h.ctx.store.db) == 3
    for b in await coll.find({"owner_id": ann}).to_list():
        assert all(set(i) == {"s", "a", "n", "t", "c"} for i in b["items"] if i != gone)
    assert gone in (await inbox(h).inbox.bucket(ann, MAX_ID) or {})["items"]
    with counting() as finds:
        assert await h.timeline("ann") == shown
    assert finds.statuses == 1  # `gone`, hydrated and left out
    assert await migration.fill_page_fields(h.ctx.store.db) == 0  # only `gone` is still bare
    await coll.update_one({"_id": ann}, {"$pull": {"items": {"s": gone["s"]}}})  # its delete
    with counting() as finds:
        assert await h.timeline("ann") == shown
    assert finds.statuses == 0
    assert await migration.fill_page_fields(h.ctx.store.db) == 0
