"""POST /statuses (with Idempotency-Key), GET and DELETE /statuses/{id}, and
GET /users/{handle}/statuses, on every strategy."""

from __future__ import annotations

from typing import Any

import httpx
from bson import ObjectId

from app.storage.models import Status
from tests.harness import Harness
from tests.test_api_errors import assert_error, snapshot
from tests.test_api_users import assert_recent_rfc3339

STATUS_KEYS = {"id", "author", "text", "created_at"}


async def statuses_in_db() -> int:
    return await Status.get_pymongo_collection().count_documents({})


async def post_keyed(h: Harness, handle: str, text: str, key: str) -> httpx.Response:
    return await h.client.post(
        "/statuses", json={"text": text}, headers={**h.auth(handle), "Idempotency-Key": key}
    )


async def get_status(h: Harness, caller: str, status_id: str) -> httpx.Response:
    return await h.client.get(f"/statuses/{status_id}", headers=h.auth(caller))


async def authored(h: Harness, caller: str, author: str, **params: Any) -> httpx.Response:
    return await h.client.get(f"/users/{author}/statuses", params=params, headers=h.auth(caller))


async def three_users(h: Harness) -> None:
    """alice and bob are friends; carol is a stranger to both."""
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")


async def test_post_returns_the_status_object(h: Harness) -> None:
    await h.user("alice")
    text = 'héllo 😀 <b>&amp;</b>\n"quoted" \u0000 end'
    r = await h.client.post("/statuses", json={"text": text}, headers=h.auth("alice"))
    assert r.status_code == 201, r.text
    status = r.json()
    assert set(status) == STATUS_KEYS
    assert status["author"] == "alice" and status["text"] == text
    assert ObjectId.is_valid(status["id"])
    assert_recent_rfc3339(status["created_at"])
    assert (await get_status(h, "alice", status["id"])).json() == status
    # Ids grow with time: a later status sorts after an earlier one.
    later = await h.post("alice", "later")
    assert ObjectId(later["id"]) > ObjectId(status["id"])


async def test_same_key_and_body_replays_the_first_answer(h: Harness) -> None:
    await h.user("alice")
    first = await post_keyed(h, "alice", "once", "key-1")
    assert first.status_code == 201, first.text
    for _ in range(2):
        replay = await post_keyed(h, "alice", "once", "key-1")
        assert replay.status_code == 200, replay.text
        assert replay.json() == first.json()
    assert await statuses_in_db() == 1
    await h.drain()
    assert await h.timeline_ids("alice") == [first.json()["id"]]


async def test_same_key_with_another_body_is_422_and_writes_nothing(h: Harness) -> None:
    await h.user("alice")
    first = await post_keyed(h, "alice", "original", "key-1")
    before = await snapshot(h)
    r = await post_keyed(h, "alice", "changed", "key-1")
    assert_error(r, 422, "idempotency_key_reused")
    assert await snapshot(h) == before
    # The key still answers for the original body.
    replay = await post_keyed(h, "alice", "original", "key-1")
    assert replay.status_code == 200 and replay.json() == first.json()


async def test_idempotency_keys_are_per_user(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    a = await post_keyed(h, "alice", "same text", "shared-key")
    b = await post_keyed(h, "bob", "same text", "shared-key")
    assert a.status_code == 201 and b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and b.json()["author"] == "bob"
    # Different keys, same body: two statuses.
    c = await post_keyed(h, "alice", "same text", "other-key")
    assert c.status_code == 201 and c.json()["id"] != a.json()["id"]
    assert await statuses_in_db() == 3


async def test_same_key_while_the_first_is_in_flight_is_409(h: Harness) -> None:
    await h.user("alice")
    first = await post_keyed(h, "alice", "text", "key-1")
    # Put the key back into the state a request holds between claiming it and committing.
    records = h.ctx.store.idempotency_keys
    changed = await records.update_one({"key": "key-1"}, {"$set": {"state": "in_flight"}})
    assert changed.modified_count == 1
    before = await snapshot(h)
    assert_error(await post_keyed(h, "alice", "text", "key-1"), 409, "idempotency_in_flight")
    assert await snapshot(h) == before
    await records.update_one({"key": "key-1"}, {"$set": {"state": "done"}})
    assert (await post_keyed(h, "alice", "text", "key-1")).json() == first.json()


async def test_get_status_author_and_friends_only(h: Harness) -> None:
    await three_users(h)
    status = await h.post("alice", "for friends")
    for caller in ("alice", "bob"):
        r = await get_status(h, caller, status["id"])
        assert r.status_code == 200 and r.json() == status
    # A stranger gets exactly what an unknown or malformed id gets: existence does not leak.
    hidden = await get_status(h, "carol", status["id"])
    unknown = await get_status(h, "carol", str(ObjectId()))
    malformed = await get_status(h, "carol", "not-an-id")
    assert_error(hidden, 404, "status_not_found")
    assert hidden.json() == unknown.json() == malformed.json()
    assert hidden.headers.get("content-length") == unknown.headers.get("content-length")
    # A former friend is a stranger.
    await h.unfriend("bob", "alice")
    assert (await get_status(h, "bob", status["id"])).json() == unknown.json()


async def test_delete_is_for_the_author_only(h: Harness) -> None:
    await three_users(h)
    status = await h.post("alice", "mine")
    before = await snapshot(h)
    for caller in ("bob", "carol"):
        r = await h.client.delete(f"/statuses/{status['id']}", headers=h.auth(caller))
        assert_error(r, 404, "status_not_found")
    assert await snapshot(h) == before
    assert (await get_status(h, "alice", status["id"])).status_code == 200

    r = await h.client.delete(f"/statuses/{status['id']}", headers=h.auth("alice"))
    assert r.status_code == 204 and r.content == b""
    assert_error(await get_status(h, "alice", status["id"]), 404)
    assert_error(await get_status(h, "bob", status["id"]), 404)
    again = await h.client.delete(f"/statuses/{status['id']}", headers=h.auth("alice"))
    assert_error(again, 404)
    for bad in (str(ObjectId()), "nope"):
        assert_error(await h.client.delete(f"/statuses/{bad}", headers=h.auth("alice")), 404)
    assert await statuses_in_db() == 0


async def test_a_deleted_status_leaves_every_timeline(h: Harness) -> None:
    await three_users(h)
    await h.befriend("bob", "carol")
    keep = await h.post("alice", "keep")
    gone = await h.post("alice", "gone")
    await h.drain()
    assert await h.timeline_ids("bob") == [gone["id"], keep["id"]]
    await h.delete("alice", gone["id"])
    # The author's own timeline drops it at once; everyone else's after the worker.
    assert await h.timeline_ids("alice") == [keep["id"]]
    await h.drain()
    for reader in ("alice", "bob"):
        assert await h.timeline_ids(reader) == [keep["id"]]
    assert await h.timeline_ids("carol") == []
    r = await authored(h, "bob", "alice")
    assert [s["id"] for s in r.json()["items"]] == [keep["id"]]


async def test_users_statuses_for_self_and_friends_only(h: Harness) -> None:
    await three_users(h)
    posted = [await h.post("alice", f"s{i}") for i in range(3)]
    await h.post("bob", "bob's own")
    for caller in ("alice", "bob"):
        r = await authored(h, caller, "alice")
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next_cursor"}
        assert page["items"] == posted[::-1] and page["next_cursor"] is None
    assert_error(await authored(h, "carol", "alice"), 404)
    assert_error(await authored(h, "alice", "nobody"), 404)
    # Not friends any more: 404 both ways.
    await h.unfriend("alice", "bob")
    assert_error(await authored(h, "bob", "alice"), 404)
    assert_error(await authored(h, "alice", "bob"), 404)


async def test_users_statuses_pages_with_before(h: Harness) -> None:
    await h.user("alice")
    posted = [(await h.post("alice", f"s{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    sizes: list[int] = []
    while True:
        r = await authored(h, "alice", "alice", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        sizes.append(len(page["items"]))
        seen += [s["id"] for s in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 3, "before": page["next_cursor"]}
    assert sizes == [3, 3, 1]
    assert seen == posted[::-1]
    # A page of exactly the rest has no next page.
    r = await authored(h, "alice", "alice", limit=7)
    assert len(r.json()["items"]) == 7 and r.json()["next_cursor"] is None
