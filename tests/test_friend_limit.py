"""MAX_FRIENDS on every path that makes a friendship (sending a request, accepting one, a
crossing request settled at once), atomically: concurrent accepts cannot take the same last
place. With and without transactions; the limit is patched small."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from app.domain import graph
from app.storage.models import Friendship, User
from tests.harness import Harness
from tests.test_outbox import all_events, without_transactions

SMALL_LIMIT = 2


@pytest.fixture(params=[True, False], ids=["transactions", "staged"])
def transactions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(graph, "MAX_FRIENDS", SMALL_LIMIT)
    value: bool = request.param
    return value


async def send(h: Harness, sender: str, to: str) -> httpx.Response:
    return await h.client.post("/friend-requests", json={"to": to}, headers=h.auth(sender))


async def accept(h: Harness, me: str, requester: str) -> httpx.Response:
    return await h.client.post(f"/friend-requests/{requester}/accept", headers=h.auth(me))


async def friends_of(handle: str) -> tuple[int, int]:
    """(edges, the user's counter) for `handle`: they must agree when no write is in flight."""
    user = await User.get_pymongo_collection().find_one({"handle": handle})
    assert user is not None
    edges = await Friendship.get_pymongo_collection().count_documents({"user_id": user["_id"]})
    return edges, int(user["friend_count"])


def refused(r: httpx.Response) -> bool:
    return r.status_code == 409 and r.json()["error"]["code"] == "friend_limit"


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_the_limit_holds_on_every_path(h: Harness, transactions: bool) -> None:
    if not transactions:
        without_transactions(h)
    for name in ("uma", "ann", "ben", "cat", "dan", "eve"):
        await h.user(name)
    await h.befriend("uma", "ann")
    # Requests sent while u had room.
    assert (await send(h, "cat", "uma")).status_code == 201
    assert (await send(h, "dan", "uma")).status_code == 201
    await h.befriend("ben", "uma")
    assert await friends_of("uma") == (SMALL_LIMIT, SMALL_LIMIT)
    await h.drain()
    events_before = len(await all_events())

    assert refused(await send(h, "eve", "uma"))  # sending
    assert refused(await accept(h, "uma", "cat"))  # accepting
    assert refused(await send(h, "uma", "dan"))  # a crossing request, settled at once
    # The other side at its limit refuses as well: cat asked uma, and cat is now full.
    await h.befriend("cat", "ann")
    await h.befriend("cat", "ben")
    assert refused(await accept(h, "uma", "cat"))
    assert await friends_of("uma") == (SMALL_LIMIT, SMALL_LIMIT)
    assert await friends_of("cat") == (SMALL_LIMIT, SMALL_LIMIT)
    # A refusal changes nothing: the requests stay pending, no event is recorded.
    incoming = (await h.client.get("/friend-requests", headers=h.auth("uma"))).json()["incoming"]
    assert sorted(i["from"] for i in incoming) == ["cat", "dan"]
    await h.drain()
    # Only cat's two befriends recorded events (two each).
    assert len(await all_events()) == events_before + 4
    assert (await h.client.get("/health")).json()["pending_events"] == 0

    # An unfriend gives the place back; a 404 takes none.
    await h.unfriend("uma", "ann")
    assert await friends_of("uma") == (1, 1)
    assert (await accept(h, "uma", "eve")).status_code == 404
    assert (await accept(h, "uma", "dan")).status_code == 200
    assert await friends_of("uma") == (SMALL_LIMIT, SMALL_LIMIT)
    assert await friends_of("dan") == (1, 1)


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_concurrent_accepts_cannot_exceed_the_limit(h: Harness, transactions: bool) -> None:
    """uma is one below the limit with several requests pending: accepting them all at once
    makes exactly one friend. The same from the requesters' side: several users one below the
    limit accept requests at once, and their common requester gets exactly its last place."""
    if not transactions:
        without_transactions(h)
    requesters = [f"req{i}" for i in range(5)]
    for name in ("uma", "ann", *requesters):
        await h.user(name)
    await h.befriend("uma", "ann")
    for r in requesters:
        assert (await send(h, r, "uma")).status_code == 201
    responses = await asyncio.gather(*(accept(h, "uma", r) for r in requesters))
    codes = Counter(r.status_code for r in responses)
    assert codes == Counter({200: 1, 409: len(requesters) - 1}), codes
    assert all(refused(r) for r in responses if r.status_code != 200)
    assert await friends_of("uma") == (SMALL_LIMIT, SMALL_LIMIT)
    # Exactly the one friendship's two events beyond the first friendship's.
    assert await h.drain() == 4
    assert (await h.client.get("/health")).json()["pending_events"] == 0

    # The other way round: vic asked tgt0..tgt4, and vic is one below the limit.
    targets = [f"tgt{i}" for i in range(5)]
    for name in ("vic", *targets):
        await h.user(name)
    await h.befriend("vic", "ann")
    for t in targets:
        assert (await send(h, "vic", t)).status_code == 201
    responses = await asyncio.gather(*(accept(h, t, "vic") for t in targets))
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: 4})
    assert await friends_of("vic") == (SMALL_LIMIT, SMALL_LIMIT)
    for t in targets:
        edges, counter = await friends_of(t)
        assert edges == counter <= 1


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_a_user_from_before_the_counter_is_counted_from_its_edges(
    h: Harness, transactions: bool
) -> None:
    """A database from before `friend_count` existed: the count comes from the edges the first
    time the limit is checked."""
    if not transactions:
        without_transactions(h)
    for name in ("uma", "ann", "ben", "cat"):
        await h.user(name)
    await h.befriend("uma", "ann")
    assert (await send(h, "cat", "uma")).status_code == 201
    await h.befriend("uma", "ben")
    await h.ctx.store.users.update_many({}, {"$unset": {"friend_count": 1}})
    assert refused(await accept(h, "uma", "cat"))
    await h.unfriend("uma", "ann")
    assert (await accept(h, "uma", "cat")).status_code == 200
    assert await friends_of("uma") == (SMALL_LIMIT, SMALL_LIMIT)
    assert await friends_of("cat") == (1, 1)
