"""Timelines may lag in what they add, never in what they remove (docs/api.md, "Timeline
semantics"), on every strategy: once DELETE /statuses/{id} or DELETE /friends/{handle} has
returned, no page (first, `before`, `after`) and no unread count shows or counts what it removed,
with the worker stopped, or after the event went dead. The randomized version of these checks is
the peek step of tests/test_equivalence.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from bson import ObjectId

from app import cursors
from app.domain import revocations, timeline_reads
from app.domain.timeline_reads import read_page
from app.strategies.contract import Page, Prelude, ReadsWithPrelude, TimelineStrategy
from tests.harness import Harness


async def everything(h: Harness, handle: str, page: int) -> list[str]:
    """Every item of every kind of read, checked for consistency: the pages in order, a refresh
    from before the oldest, and the unread count (no marker: the whole timeline)."""
    ids = await h.timeline_ids(handle, page=page)
    assert len(ids) == len(set(ids))
    if ids:
        oldest = cursors.encode(ObjectId(ids[-1]))
        fresh = await h.timeline(handle, after=oldest, limit=100)
        assert [i["id"] for i in fresh["items"]] == ids[:-1]
        assert fresh["gap"] is False
    r = await h.client.get("/timeline/unread_count", headers=h.auth(handle))
    assert r.json()["count"] == len(ids)
    return ids


async def friends_with_history(h: Harness, posts: int) -> list[dict[str, Any]]:
    await h.user("amy")
    await h.user("bob")
    await h.befriend("amy", "bob")
    made = [await h.post("amy", f"amy {i}") for i in range(posts)]
    await h.drain()
    return made


async def test_a_delete_is_gone_from_every_read_at_once(h: Harness) -> None:
    made = await friends_with_history(h, 6)
    before = await everything(h, "bob", page=2)
    assert before == [s["id"] for s in reversed(made)]
    # Deleted while the worker is stopped: the middle of a page and a page's edge.
    for gone in (made[3], made[4]):
        await h.delete("amy", gone["id"])
    want = [i for i in before if i not in {made[3]["id"], made[4]["id"]}]
    assert await everything(h, "bob", page=2) == want
    assert await everything(h, "amy", page=2) == want
    # A full page still holds `limit` items, and its cursor goes on past the hidden ones.
    first = await h.timeline("bob", limit=2)
    assert [i["id"] for i in first["items"]] == want[:2]
    assert first["next_cursor"] is not None
    # A refresh from before the delete leaves it out too, and says there is no gap.
    since = cursors.encode(ObjectId(made[1]["id"]))
    fresh = await h.timeline("bob", after=since, limit=2)
    assert [i["id"] for i in fresh["items"]] == [made[5]["id"], made[2]["id"]]
    assert fresh["gap"] is False
    await h.drain()
    assert await everything(h, "bob", page=2) == want
    # Settled by the worker (kept a little longer, revocations.SETTLED_KEEP_S).
    assert await h.ctx.store.revocations.count_documents({"settled": {"$exists": False}}) == 0


class DrainAfterRead:
    """The configured strategy, with the worker drained right after its first page read: the
    removal is applied and its record settled between the page's read and its check."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.inner = h.ctx.strategy
        self.drained = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, user_id: ObjectId, **kw: Any) -> Page:
        page = await self.inner.read(user_id, **kw)
        if not self.drained:
            self.drained = await self.h.drain()
        return page


class DrainAfterReadWith(DrainAfterRead):
    """DrainAfterRead for a strategy that reads a page with its records (ReadsWithPrelude)."""

    async def read_with(
        self, prelude: Prelude, user_id: ObjectId, **kw: Any
    ) -> tuple[Page, list[Any]]:
        assert isinstance(self.inner, ReadsWithPrelude)
        out = await self.inner.read_with(prelude, user_id, **kw)
        if not self.drained:
            self.drained = await self.h.drain()
        return out


@pytest.mark.parametrize("candidates", [timeline_reads.PAGE_CANDIDATES, 0])
async def test_a_removal_applied_between_a_pages_read_and_its_check_stays_hidden(
    h: Harness, monkeypatch: pytest.MonkeyPatch, candidates: int
) -> None:
    """The worker applies the delete (and settles its record) after the page was read from
    derived data that still held the status: the page must not show it, whether its records
    were asked for before the read or (0 candidates: too many in flight) checked by key after
    it. Deleting records on settle showed the deleted status in the second case."""
    monkeypatch.setattr(timeline_reads, "PAGE_CANDIDATES", candidates)
    made = await friends_with_history(h, 3)
    await h.delete("amy", made[1]["id"])
    bob = await h.ctx.store.users.find_one({"handle": "bob"})
    assert bob is not None
    together = isinstance(h.ctx.strategy, ReadsWithPrelude)
    racing = DrainAfterReadWith(h) if together else DrainAfterRead(h)
    page = await read_page(
        h.ctx.store.revocations, cast(TimelineStrategy, racing), bob["_id"], limit=10
    )
    if not h.ctx.strategy.reads_truth:
        assert racing.drained, "the race was not staged"
    assert [str(v.id) for v in page.items] == [made[2]["id"], made[0]["id"]]


async def test_one_command_reads_hide_what_a_settled_record_names(h: Harness) -> None:
    """A page read with its records in one command (ReadsWithPrelude) assumes nothing of the
    order the server reads the two in: the page may come from before the worker applied a
    removal and the record from after it settled it. Staged here by settling the record while
    the derived data still holds the status: such a page must hide it (its records are asked
    for settled or not). Asking for unsettled records only, as the check made before a read
    does, showed it."""
    if not isinstance(h.ctx.strategy, ReadsWithPrelude):
        pytest.skip("pages of this strategy read their records first, in their own query")
    made = await friends_with_history(h, 3)
    await h.delete("amy", made[1]["id"])
    key = revocations.status_key(ObjectId(made[1]["id"]))
    await h.ctx.store.revocations.update_one({"_id": key}, {"$currentDate": {"settled": True}})
    bob = await h.ctx.store.users.find_one({"handle": "bob"})
    assert bob is not None
    for after in (None, ObjectId(made[0]["id"])):
        page = await read_page(
            h.ctx.store.revocations, h.ctx.strategy, bob["_id"], limit=10, after=after
        )
        assert made[1]["id"] not in [str(v.id) for v in page.items]
    assert made[1]["id"] not in [i["id"] for i in (await h.timeline("bob"))["items"]]


async def test_settled_records_go_after_their_keep_time(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocations, "SETTLED_KEEP_S", 0.0)
    made = await friends_with_history(h, 2)
    await h.delete("amy", made[0]["id"])
    await h.drain()
    assert await h.ctx.store.revocations.count_documents({"settled": {"$exists": True}}) == 1
    await asyncio.sleep(0.01)  # the server's clock has moved past the first settle
    await h.delete("amy", made[1]["id"])
    await h.drain()
    # The second settle deleted the first record; the second is settled and kept.
    left = await h.ctx.store.revocations.find({}).to_list()
    assert [d["_id"] for d in left] == [revocations.status_key(ObjectId(made[1]["id"]))]
    assert "settled" in left[0]


async def test_befriending_again_ends_the_settled_records_at_once(h: Harness) -> None:
    made = await friends_with_history(h, 2)
    await h.unfriend("amy", "bob")
    await h.drain()
    assert await h.ctx.store.revocations.count_documents({"settled": {"$exists": True}}) == 2
    await h.befriend("amy", "bob")
    assert await h.ctx.store.revocations.count_documents({}) == 0
    await h.drain()
    assert await everything(h, "bob", page=2) == [s["id"] for s in reversed(made)]


async def test_an_unfriend_hides_both_sides_at_once(h: Harness) -> None:
    made = await friends_with_history(h, 3)
    bobs = await h.post("bob", "bob's own")
    await h.drain()
    await h.unfriend("bob", "amy")
    assert await everything(h, "bob", page=2) == [bobs["id"]]
    assert await everything(h, "amy", page=2) == [s["id"] for s in reversed(made)]
    # A post made after the unfriend never reaches the ex-friend either.
    late = await h.post("amy", "after the unfriend")
    assert late["id"] not in await everything(h, "bob", page=2)
    await h.drain()
    assert await everything(h, "bob", page=2) == [bobs["id"]]


async def test_befriending_again_shows_the_statuses_again_after_the_worker(h: Harness) -> None:
    """The revocation stays until its event is applied; a new friendship's backfill then shows
    the author again (an addition, which may lag)."""
    made = await friends_with_history(h, 2)
    await h.unfriend("amy", "bob")
    await h.befriend("amy", "bob")
    assert set(await everything(h, "bob", page=2)) <= {s["id"] for s in made}
    await h.drain()
    assert await everything(h, "bob", page=2) == [s["id"] for s in reversed(made)]


async def test_removals_hold_while_the_event_is_dead(h: Harness) -> None:
    made = await friends_with_history(h, 3)
    await h.delete("amy", made[2]["id"])
    await h.unfriend("amy", "bob")
    await h.ctx.store.events.update_many({"state": "pending"}, {"$set": {"state": "dead"}})
    assert await h.drain() == 0
    assert await everything(h, "bob", page=2) == []
    amys = await everything(h, "amy", page=2)
    assert amys == [made[1]["id"], made[0]["id"]]


@pytest.mark.parametrize("strategy", ["hybrid"])
@pytest.mark.parametrize("hybrid_threshold", [1])
async def test_hybrid_ex_friend_sees_no_large_author_post_made_after_the_unfriend(
    h: Harness,
) -> None:
    """amy has two friends, so she is a large author (threshold 1): her statuses are merged
    into pages at read time, through bob's large-friend pair, which only the worker removes."""
    await h.user("amy")
    await h.user("bob")
    await h.user("cat")
    await h.befriend("amy", "bob")
    await h.befriend("amy", "cat")
    await h.drain()
    assert await h.ctx.store.large_authors.count_documents({}) == 1
    await h.unfriend("bob", "amy")
    late = await h.post("amy", "after the unfriend")
    r = await h.client.get(f"/statuses/{late['id']}", headers=h.auth("bob"))
    assert r.status_code == 404
    assert await everything(h, "bob", page=2) == []
    assert await everything(h, "cat", page=2) == [late["id"]]


async def test_a_removal_that_never_happened_hides_nothing_once_its_event_is_dropped(
    h: Harness,
) -> None:
    """A staged delete whose change never landed: its record goes at once when the event is
    dropped (nothing left derived data, so there is no page to protect)."""
    made = await friends_with_history(h, 1)
    key, rev = revocations.status_key(ObjectId(made[0]["id"])), ObjectId()
    await revocations.revoke(h.ctx.store.revocations, [(key, rev)], session=None)
    staged = {"_id": ObjectId(), "state": "staged", "revokes": rev, "revokes_key": key}
    await h.ctx.store.events.insert_one(staged)
    hidden = [] if not h.ctx.strategy.reads_truth else [made[0]["id"]]
    assert await everything(h, "bob", page=2) == hidden  # hidden while the delete may land
    assert await h.ctx.queue.discard_one_staged(staged["_id"])
    assert await h.ctx.store.revocations.count_documents({}) == 0
    assert await everything(h, "bob", page=2) == [made[0]["id"]]
