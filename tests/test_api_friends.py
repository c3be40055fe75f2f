"""Friend requests (with consent) and friends, on every strategy."""

from __future__ import annotations

from typing import Any

import httpx

from tests.harness import Harness
from tests.test_api_errors import assert_error, snapshot
from tests.test_api_users import assert_recent_rfc3339


async def send(h: Harness, sender: str, to: str) -> httpx.Response:
    return await h.client.post("/friend-requests", json={"to": to}, headers=h.auth(sender))


async def requests_of(h: Harness, handle: str) -> dict[str, Any]:
    r = await h.client.get("/friend-requests", headers=h.auth(handle))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    assert set(data) == {"incoming", "outgoing"}
    return data


async def friend_handles(h: Harness, handle: str) -> list[str]:
    r = await h.client.get("/friends", params={"limit": 100}, headers=h.auth(handle))
    assert r.status_code == 200, r.text
    return [item["handle"] for item in r.json()["items"]]


async def counts(h: Harness) -> tuple[int, int]:
    """(pending requests, friendship edges) in the database."""
    return (
        await h.ctx.store.friend_requests.count_documents({}),
        await h.ctx.store.friendships.count_documents({}),
    )


async def test_request_is_pending_until_accepted(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    r = await send(h, "alice", "bob")
    assert r.status_code == 201, r.text
    assert r.json() == {"from": "alice", "to": "bob", "status": "pending"}
    # Sending it again changes nothing.
    again = await send(h, "alice", "bob")
    assert again.status_code in (200, 201) and again.json()["status"] == "pending"
    assert await counts(h) == (1, 0)
    assert await friend_handles(h, "alice") == [] and await friend_handles(h, "bob") == []

    alice, bob = await requests_of(h, "alice"), await requests_of(h, "bob")
    assert alice["incoming"] == [] and bob["outgoing"] == []
    assert [o["to"] for o in alice["outgoing"]] == ["bob"]
    assert [i["from"] for i in bob["incoming"]] == ["alice"]
    assert set(alice["outgoing"][0]) == {"to", "created_at"}
    assert set(bob["incoming"][0]) == {"from", "created_at"}
    assert_recent_rfc3339(bob["incoming"][0]["created_at"])

    r = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "accepted"}
    assert await friend_handles(h, "alice") == ["bob"]
    assert await friend_handles(h, "bob") == ["alice"]
    assert await requests_of(h, "alice") == {"incoming": [], "outgoing": []}
    assert await requests_of(h, "bob") == {"incoming": [], "outgoing": []}
    assert await counts(h) == (0, 2)


async def test_crossing_request_is_accepted_with_200(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    assert (await send(h, "alice", "bob")).status_code == 201
    r = await send(h, "bob", "alice")
    assert r.status_code == 200, r.text
    assert r.json() == {"from": "bob", "to": "alice", "status": "accepted"}
    assert await friend_handles(h, "alice") == ["bob"]
    assert await counts(h) == (0, 2)


async def test_request_to_a_friend_is_200_accepted_and_changes_nothing(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    before = await snapshot(h)
    for sender, to in (("alice", "bob"), ("bob", "alice")):
        r = await send(h, sender, to)
        assert r.status_code == 200, r.text
        assert r.json() == {"from": sender, "to": to, "status": "accepted"}
    assert await snapshot(h) == before


async def test_request_to_oneself_is_422_and_to_nobody_404(h: Harness) -> None:
    await h.user("alice")
    before = await snapshot(h)
    assert_error(await send(h, "alice", "alice"), 422, "self_request")
    assert_error(await send(h, "alice", "nobody"), 404, "user_not_found")
    assert await snapshot(h) == before


async def test_accept_without_a_pending_request_is_404(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    await h.user("carol")
    await send(h, "alice", "bob")
    before = await snapshot(h)
    # The sender cannot accept her own request; nobody else can either; unknown users are 404.
    for accepter, sender in (
        ("alice", "bob"),
        ("carol", "alice"),
        ("bob", "carol"),
        ("bob", "zed"),
    ):
        r = await h.client.post(f"/friend-requests/{sender}/accept", headers=h.auth(accepter))
        assert_error(r, 404)
    assert await snapshot(h) == before
    ok = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert ok.status_code == 200
    # Accepting twice: the request is gone.
    twice = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert_error(twice, 404, "request_not_found")
    assert await counts(h) == (0, 2)


async def test_delete_declines_incoming_and_cancels_outgoing(h: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await send(h, "alice", "bob")
    await send(h, "carol", "alice")
    assert await counts(h) == (2, 0)

    # bob declines alice's request.
    r = await h.client.delete("/friend-requests/alice", headers=h.auth("bob"))
    assert r.status_code == 204 and r.content == b""
    assert await requests_of(h, "bob") == {"incoming": [], "outgoing": []}
    assert_error(await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob")), 404)

    # carol cancels her request to alice.
    r = await h.client.delete("/friend-requests/alice", headers=h.auth("carol"))
    assert r.status_code == 204
    assert await requests_of(h, "alice") == {"incoming": [], "outgoing": []}
    assert await counts(h) == (0, 0)

    # Nothing pending any more: still 204; an unknown user: 404.
    again = await h.client.delete("/friend-requests/alice", headers=h.auth("carol"))
    assert again.status_code == 204 and again.content == b"", again.text
    assert_error(await h.client.delete("/friend-requests/zed", headers=h.auth("carol")), 404)
    # A declined request can be sent again.
    assert (await send(h, "alice", "bob")).status_code == 201


async def test_friends_pages_with_limit_and_cursor(h: Harness) -> None:
    await h.user("alice")
    names = [f"friend_{i}" for i in range(5)]
    for name in names:
        await h.user(name, name.upper())
        await h.befriend(name, "alice")
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        r = await h.client.get("/friends", params=params, headers=h.auth("alice"))
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next_cursor"}
        pages += 1
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        assert len(page["items"]) == 2
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert pages == 3
    # Newest friendship first, each friend once, with the contract's fields.
    assert [f["handle"] for f in seen] == names[::-1]
    for item in seen:
        assert set(item) == {"handle", "display_name", "since"}
        assert item["display_name"] == item["handle"].upper()
        assert_recent_rfc3339(item["since"])
    # The default page (20) holds all five, newest first; exactly `limit` friends leave no next
    # page.
    r = await h.client.get("/friends", headers=h.auth("alice"))
    assert r.status_code == 200, r.text
    assert [f["handle"] for f in r.json()["items"]] == names[::-1]
    assert r.json()["next_cursor"] is None
    r = await h.client.get("/friends", params={"limit": 5}, headers=h.auth("alice"))
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 5 and r.json()["next_cursor"] is None


async def test_unfriend_is_idempotent_and_404_only_for_unknown_users(h: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")
    for _ in range(2):
        r = await h.client.delete("/friends/bob", headers=h.auth("alice"))
        assert r.status_code == 204 and r.content == b""
    assert await friend_handles(h, "alice") == [] and await friend_handles(h, "bob") == []
    assert await counts(h) == (0, 0)
    # Not a friend, or oneself: nothing to end, still 204.
    assert (await h.client.delete("/friends/carol", headers=h.auth("alice"))).status_code == 204
    assert (await h.client.delete("/friends/alice", headers=h.auth("alice"))).status_code == 204
    assert_error(await h.client.delete("/friends/zed", headers=h.auth("alice")), 404)
    # Friendship needs consent again after an unfriend.
    assert (await send(h, "bob", "alice")).json()["status"] == "pending"
