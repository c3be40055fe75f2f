"""The walk-through of the README, on every strategy."""

from __future__ import annotations

from tests.harness import Harness


async def test_friends_see_each_other_after_drain(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    early = await h.post("bob", "before we were friends")
    await h.befriend("alice", "bob")
    mine = await h.post("alice", "hello")
    assert (await h.timeline_ids("alice"))[0] == mine["id"]  # own status at once
    await h.drain()
    assert await h.timeline_ids("bob") == [mine["id"], early["id"]]
    assert await h.timeline_ids("alice") == [mine["id"], early["id"]]
    await h.unfriend("bob", "alice")
    await h.drain()
    assert await h.timeline_ids("bob") == [early["id"]]
    assert await h.timeline_ids("alice") == [mine["id"]]
