"""The worker's handlers, applied directly: twice in a row, in reverse and shuffled order, and the
classic out-of-order cases. Handlers reconcile to the current source of truth, so every order
must converge to the model's timelines, and a second application must change nothing at all.

Scenarios are written as scripts (tests/test_equivalence.py) without drains and played through
the API; the events they recorded are then taken from the `events` collection and applied here.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from app.domain import revocations
from app.pipeline.events import apply_event
from app.storage.models import Event, Revocation, utcnow
from tests.derived import dump, holders
from tests.harness import Harness
from tests.test_equivalence import Player, Script, new_script

# Small, so that backfills are bounded, timelines get trimmed and windows slide.
MAX = 3
pytestmark = pytest.mark.parametrize("timeline_max", [MAX])

# Shuffled orders tried after the reversed one.
SHUFFLES = 3


def busy_scenario() -> Script:
    """Bounded backfills, a reader who only has backfills, deletes inside windows, unfriend and
    befriend again, crossing friendships: every handler path, with TIMELINE_MAX = 3."""
    s = new_script(MAX)
    for _ in range(5):
        s.post("user0")  # 0-4
    s.post("user1")  # 5
    s.post("user1")  # 6
    s.drain()  # posts reach only their authors: later friendships get bounded backfills
    s.befriend("user0", "user1")
    s.join("user3", "user0")  # a reader: their timeline is user0's backfill alone
    s.drain()
    s.post("user2")  # 7
    s.befriend("user1", "user2")
    s.delete(4)  # user0's newest: user0's and user3's windows slide down to 1
    s.drain()
    # What follows is pending when the tests apply events themselves.
    s.post("user1")  # 8
    s.unfriend("user0", "user1")
    s.delete(8)
    s.befriend("user1", "user0")
    s.post("user2")  # 9
    s.delete(7)
    s.befriend("user2", "user0")
    s.unfriend("user1", "user2")
    s.delete(3)
    s.post("user0")  # 10
    return s


async def play(h: Harness, script: Script) -> Player:
    player = Player(h, h.ctx.strategy.name, script)
    await player.play()
    return player


async def recorded_events(*, pending_only: bool = True) -> list[dict[str, Any]]:
    flt = {"state": "pending"} if pending_only else {}
    return await Event.get_pymongo_collection().find(flt).sort("_id", 1).to_list()


async def mark_done(events: list[dict[str, Any]]) -> None:
    """What the worker does once an event is applied: settle its revocation record
    (app.domain.revocations), mark it done."""
    for event in events:
        await revocations.settle(Revocation.get_pymongo_collection(), event)
    await Event.get_pymongo_collection().update_many(
        {"_id": {"$in": [e["_id"] for e in events]}},
        {"$set": {"state": "done", "done_at": utcnow(), "lease_until": None}},
    )


async def assert_matches_model(h: Harness, player: Player, script: Script) -> None:
    assert (await h.client.get("/health")).json()["pending_events"] == 0
    for user in sorted(script.model.users):
        got = [player.numbers.get(i, -1) for i in await h.timeline_ids(user, page=2)]
        assert got == script.model.timeline(user), f"{user}: {got}"


async def test_every_handler_twice_in_a_row_changes_nothing(h: Harness) -> None:
    script = busy_scenario()
    player = await play(h, script)
    events = await recorded_events()
    assert len(events) > 10
    for event in events:
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
        # Every derived document, ids included: a repeated handler must not even rewrite one.
        once = await dump(h.ctx.store)
        assert any(once.values())
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
        assert await dump(h.ctx.store) == once, (
            f"{event['kind']} changed derived data when repeated"
        )
        await mark_done([event])
    await assert_matches_model(h, player, script)
    assert await h.drain() == 0


async def test_replaying_the_whole_history_again_changes_no_timeline(h: Harness) -> None:
    """After a normal drain, every event applied once more (as after a lost lease, much later)."""
    script = busy_scenario()
    player = await play(h, script)
    await h.drain()
    await assert_matches_model(h, player, script)
    for event in await recorded_events(pending_only=False):
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
    await assert_matches_model(h, player, script)


async def test_reversed_and_shuffled_orders_converge(h: Harness) -> None:
    script = busy_scenario()
    player = await play(h, script)
    events = await recorded_events()
    for event in reversed(events):
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
    await mark_done(events)
    await assert_matches_model(h, player, script)
    rng = random.Random(7)
    for _ in range(SHUFFLES):
        rng.shuffle(events)
        for event in events:
            await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
        await assert_matches_model(h, player, script)


async def apply_in_order(h: Harness, events: list[dict[str, Any]]) -> None:
    """Apply `events` in the order given, each twice, then mark them all done."""
    for event in events:
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
        await apply_event(h.ctx.strategy, event, user_activity=h.ctx.store.user_activity)
    await mark_done(events)


async def test_unfriend_applied_before_the_befriend_that_preceded_it(h: Harness) -> None:
    s = new_script(MAX)
    for _ in range(4):
        s.post("user0")  # 0-3: more than the backfill takes
    s.post("user1")  # 4
    s.befriend("user0", "user1")
    s.unfriend("user1", "user0")
    player = await play(h, s)
    events = await recorded_events()
    friendship = [e for e in events if e["kind"] == "friendship_changed"]
    assert len(friendship) == 4  # two for the befriend, then two for the unfriend
    posts = [e for e in events if e["kind"] == "status_posted"]
    await apply_in_order(h, posts + friendship[2:] + friendship[:2])
    await assert_matches_model(h, player, s)
    # Nothing of the other side is left behind in the derived data either.
    user0, user1 = player.user_ids["user0"], player.user_ids["user1"]
    entries = h.ctx.store.timeline_entries
    assert await entries.count_documents({"owner_id": user1, "author_id": user0}) == 0
    assert await entries.count_documents({"owner_id": user0, "author_id": user1}) == 0
    statuses = h.ctx.store.statuses
    assert await statuses.count_documents({"author_id": user0, "audience": user1}) == 0
    assert await statuses.count_documents({"author_id": user1, "audience": user0}) == 0


async def test_befriend_again_applied_in_reverse_ends_as_friends(h: Harness) -> None:
    s = new_script(MAX)
    for _ in range(5):
        s.post("user0")  # 0-4
    s.befriend("user0", "user1")
    s.unfriend("user0", "user1")
    s.befriend("user1", "user0")
    s.delete(4)  # user1's window of user0 slides down to 1
    player = await play(h, s)
    await apply_in_order(h, list(reversed(await recorded_events())))
    await assert_matches_model(h, player, s)


async def test_delete_applied_before_post(h: Harness) -> None:
    s = new_script(MAX)
    s.befriend("user0", "user1")
    s.post("user0")  # 0
    s.post("user0")  # 1
    s.delete(1)
    player = await play(h, s)
    events = await recorded_events()
    posted = [e for e in events if e["kind"] == "status_posted"]
    deleted = [e for e in events if e["kind"] == "status_deleted"]
    others = [e for e in events if e not in posted and e not in deleted]
    await apply_in_order(h, others + deleted + posted)
    await assert_matches_model(h, player, s)
    gone = deleted[0]["status_id"]
    assert await h.ctx.store.timeline_entries.count_documents({"status_id": gone}) == 0
    assert await h.ctx.store.statuses.count_documents({"_id": gone}) == 0


async def test_post_applied_after_a_later_friendship(h: Harness) -> None:
    """A status posted before a befriend, its event applied after the befriend's: it reaches the
    new friend once, not twice, and not a third user."""
    s = new_script(MAX)
    s.post("user0")  # 0
    s.befriend("user0", "user1")
    player = await play(h, s)
    events = await recorded_events()
    await apply_in_order(h, events[1:] + events[:1])
    await assert_matches_model(h, player, s)
    # Each reader holds it once, whatever the strategy materializes it in.
    held = await holders(h.ctx.store, h.ctx.strategy.name, events[0]["status_id"])
    if h.ctx.strategy.name != "fanout_on_read":
        assert held == sorted([player.user_ids["user0"], player.user_ids["user1"]])
