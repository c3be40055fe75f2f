"""hybrid: an author crossing HYBRID_THRESHOLD, both ways, with pages and cursors read across
the change, a crossing interrupted mid-way (reads exact in the half-done state, the retry
finishes it) and a changed threshold (reconciled by the worker, no rebuild)."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from app import cursors, maintenance
from app.strategies.hybrid import Hybrid, low_mark
from app.strategies.hybrid.pairs import LargeAudience
from fanout import switch
from tests import harness
from tests.harness import Harness, running

MAX = 4  # TIMELINE_MAX: small, so that windows slide within a few posts
THRESHOLD = 2  # more than two friends: large


class Fault(Exception):
    """A crash injected between two steps of a crossing."""


async def uid(h: Harness, handle: str) -> ObjectId:
    return ObjectId((await h.client.get(f"/users/{handle}")).json()["id"])


async def truth(h: Harness, handle: str) -> list[str]:
    return [str(i) for i in await maintenance.truth_ids(h.ctx, await uid(h, handle))]


async def assert_exact(h: Harness, *handles: str, check: bool = True) -> None:
    """Pages of 1 (every cursor used) and the unread count are the truth; and `timeline check`
    passes (not mid-way: the ex-friend's own events are not applied yet)."""
    for handle in handles:
        expected = await truth(h, handle)
        assert await h.timeline_ids(handle, page=1) == expected, handle
        count = (await h.client.get("/timeline/unread_count", headers=h.auth(handle))).json()
        assert count["count"] == len(expected), handle
    assert not check or (await maintenance.check(h.ctx)).ok


def hybrid(h: Harness) -> Hybrid:
    assert isinstance(h.ctx.strategy, Hybrid)
    return h.ctx.strategy


async def state(h: Harness, handle: str) -> str | None:
    return await hybrid(h).large.state(await uid(h, handle))


async def pairs_of(h: Harness, handle: str) -> list[dict[str, Any]]:
    cursor = h.ctx.store.large_friends.find({"author_id": await uid(h, handle)})
    return await cursor.to_list()


async def copies(h: Harness, owner: str, author: str) -> int:
    flt = {"owner_id": await uid(h, owner), "author_id": await uid(h, author)}
    return await h.ctx.store.hybrid_entries.count_documents(flt)


@pytest.fixture
async def hy(mongo_url: str) -> Any:
    settings = harness.test_settings(
        mongo_url, "hybrid", timeline_max=MAX, hybrid_threshold=THRESHOLD
    )
    async with running(settings) as h:
        for handle in ("amy", "rob", "fay", "fox"):
            await h.user(handle)
        await h.befriend("amy", "rob")
        await h.post("rob", "reader's own")
        for i in range(6):
            await h.post("amy", f"amy {i}")
        await h.drain()
        yield h


async def test_crossing_up_and_down_keeps_pages_and_cursors_exact(hy: Harness) -> None:
    h = hy
    first = await h.timeline("rob", limit=2)
    cursor = first["next_cursor"]
    # Copies are trimmed to TIMELINE_MAX now and then (receiver_copies.TRIM_EVERY): at least.
    assert await state(h, "amy") is None and await copies(h, "rob", "amy") >= MAX
    # Up: a third friend. The reader's pair appears; a's new statuses are not copied.
    await h.befriend("amy", "fay")
    await h.befriend("fox", "amy")
    await h.drain()
    assert await state(h, "amy") == "large"
    assert {p["owner_id"] for p in await pairs_of(h, "amy")} == {
        await uid(h, u) for u in ("rob", "fay", "fox")
    }
    older = await h.timeline("rob", limit=2, before=cursor)  # a cursor from before the crossing
    assert [i["id"] for i in older["items"]] == (await truth(h, "rob"))[2:4]
    newest = [(await h.post("amy", f"large {i}"))["id"] for i in range(2)]
    await h.drain()
    assert await copies(h, "fay", "amy") == 0  # merged at read time, never copied
    await assert_exact(h, "rob", "fay", "fox", "amy")
    assert (await truth(h, "rob"))[:2] == newest[::-1]
    since = await h.timeline("rob", after=cursors.encode(ObjectId(newest[0])))
    assert [i["id"] for i in since["items"]] == [newest[1]]
    # Back to two friends, between the low mark and the threshold: amy stays large.
    await h.unfriend("fay", "amy")
    await h.drain()
    assert low_mark(THRESHOLD) == 1
    assert await state(h, "amy") == "large"
    assert {p["owner_id"] for p in await pairs_of(h, "amy")} == {
        await uid(h, u) for u in ("rob", "fox")
    }
    await assert_exact(h, "rob", "fay", "fox", "amy")
    # Down: one friend, the low mark. The pairs go; a's window is copied to every friend.
    await h.unfriend("fox", "amy")
    await h.drain()
    assert await state(h, "amy") is None and await pairs_of(h, "amy") == []
    assert await copies(h, "rob", "amy") >= MAX
    rob = {"owner_id": await uid(h, "rob"), "status_id": {"$in": [ObjectId(i) for i in newest]}}
    assert await h.ctx.store.hybrid_entries.count_documents(rob) == 2  # posted while large
    older = await h.timeline("rob", limit=2, before=cursor)
    assert [i["id"] for i in older["items"]] == [
        i for i in await truth(h, "rob") if ObjectId(i) < cursors.decode(cursor)
    ][:2]
    await h.post("amy", "ordinary again")
    # Back to two friends while fanned out: between the marks, amy stays fanned out.
    await h.befriend("amy", "fay")
    await h.drain()
    assert await state(h, "amy") is None
    await assert_exact(h, "rob", "fay", "fox", "amy")


async def test_a_crossing_down_interrupted_mid_way_reads_exact_and_converges(
    hy: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = hy
    await h.befriend("amy", "fay")
    await h.befriend("amy", "fox")
    await h.drain()
    assert await state(h, "amy") == "large"
    await h.post("amy", "while large")
    await h.unfriend("amy", "fox")
    await h.drain()
    assert await state(h, "amy") == "large"  # two friends: above the low mark
    await h.unfriend("amy", "fay")  # down to one friend; its events are applied by hand below

    async def crash(self: Hybrid, author_id: ObjectId, owners: Any) -> int:
        raise Fault("killed after the pairs were marked, before the backfill")

    monkeypatch.setattr(Hybrid, "_backfill", crash)
    kept = await copies(h, "rob", "amy")
    with pytest.raises(Fault):
        await hybrid(h).apply_friendship(await uid(h, "amy"), await uid(h, "fay"))
    # Half done: the entries miss amy's status from while she was large, so pages must still
    # take her from `statuses`.
    assert await state(h, "amy") == "descending"
    assert all(p["materialized"] for p in await pairs_of(h, "amy"))
    assert await copies(h, "rob", "amy") == kept
    await assert_exact(h, "rob", "fox", "amy", check=False)
    monkeypatch.undo()
    await h.drain()  # the retry (the event again) finishes the crossing
    assert await state(h, "amy") is None and await pairs_of(h, "amy") == []
    await assert_exact(h, "rob", "fay", "fox", "amy")


async def test_a_crossing_up_interrupted_mid_way_reads_exact_and_converges(
    hy: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = hy
    await h.befriend("amy", "fay")
    await h.befriend("amy", "fox")  # up to three friends; events applied by hand below
    set_state = LargeAudience.set_state

    async def crash(self: LargeAudience, author_id: ObjectId, new: Any) -> None:
        if new == "large":
            raise Fault("killed after the pairs, before the state")
        await set_state(self, author_id, new)

    monkeypatch.setattr(LargeAudience, "set_state", crash)
    with pytest.raises(Fault):
        await hybrid(h).apply_friendship(await uid(h, "amy"), await uid(h, "fox"))
    assert await state(h, "amy") == "ascending"
    # A post meanwhile is fanned out (safe mid-way): the readers merging a ignore the copy.
    status = await h.post("amy", "mid-crossing")
    await hybrid(h).apply_posted(await uid(h, "amy"), ObjectId(status["id"]))
    # The status's own copy, not a count: the insert may also trim rob's copies to MAX (one
    # insert in TRIM_EVERY, chosen by a hash of the ids), which made a count flaky.
    mine = {"owner_id": await uid(h, "rob"), "status_id": ObjectId(status["id"])}
    assert await h.ctx.store.hybrid_entries.count_documents(mine) == 1
    await assert_exact(h, "rob", "amy", check=False)
    monkeypatch.undo()
    await h.drain()
    assert await state(h, "amy") == "large"
    await assert_exact(h, "rob", "fay", "fox", "amy")


async def test_a_changed_threshold_needs_no_rebuild(hy: Harness) -> None:
    """Pages do not depend on the threshold: data built under one value reads exact under
    another, and the author moves over at their next friendship change (or `rebuild`)."""
    h = hy
    await h.befriend("amy", "fay")
    await h.befriend("amy", "fox")
    await h.drain()
    assert await state(h, "amy") == "large"
    knob = h.ctx.settings.model_copy(update={"hybrid_threshold": THRESHOLD + 5})
    raised = h.ctx.build_strategy("hybrid", settings=knob)
    for handle in ("rob", "fay", "amy"):
        assert [str(i) for i in await raised.timeline_ids(await uid(h, handle))] == await truth(
            h, handle
        )
    assert await raised.rebuild_author(await uid(h, "amy")) > 0  # a descends under the new value
    assert await state(h, "amy") is None
    for handle in ("rob", "fay", "fox", "amy"):
        assert [str(i) for i in await raised.timeline_ids(await uid(h, handle))] == await truth(
            h, handle
        )


async def test_check_reports_a_lost_pair_and_rebuild_repairs_it(hy: Harness) -> None:
    h = hy
    await h.befriend("amy", "fay")
    await h.befriend("amy", "fox")
    await h.drain()
    assert await state(h, "amy") == "large"
    await h.post("amy", "merged in, not copied")
    await h.drain()
    await h.ctx.store.large_friends.delete_one({"owner_id": await uid(h, "rob")})
    report = await maintenance.check(h.ctx)
    assert [d.handle for d in report.drifted] == ["rob"]  # amy's statuses are missing
    users = await maintenance.user_ids(h.ctx.store)
    assert await switch.rebuild_leased(h.ctx.store, h.ctx.strategy, users) > 0
    assert (await maintenance.check(h.ctx)).ok
    assert await switch.rebuild_leased(h.ctx.store, h.ctx.strategy, users) == 0  # idempotent
