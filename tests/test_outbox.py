"""The outbox: every write records exactly its events in the same write as the change, nothing
for a request that fails, and the no-transaction path (`outbox.staged`) cannot lose an event."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

from app.pipeline import outbox, queue
from app.pipeline.queue import STAGED_CHECKS, STAGED_GRACE_S
from app.storage.models import Event, utcnow
from tests.harness import Harness


def without_transactions(h: Harness) -> None:
    """Make the app take the standalone-mongod path (the context is shared with the routes)."""
    h.ctx.database = dataclasses.replace(h.ctx.database, supports_transactions=False)


async def all_events() -> list[dict[str, Any]]:
    return await Event.get_pymongo_collection().find({}).sort("_id", 1).to_list()


class EventLog:
    """What each action added to the `events` collection."""

    def __init__(self) -> None:
        self.seen = 0

    async def new(self) -> list[dict[str, Any]]:
        events = await all_events()
        added, self.seen = events[self.seen :], len(events)
        return added


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, ObjectId, ObjectId | None]]:
    return sorted(
        (e["kind"], e["author_id"], e.get("other_id") or e.get("status_id")) for e in events
    )


async def test_each_write_records_exactly_its_events(h: Harness) -> None:
    log = EventLog()
    alice = ObjectId((await h.user("alice"))["id"])
    bob = ObjectId((await h.user("bob"))["id"])
    carol = ObjectId((await h.user("carol"))["id"])
    assert await log.new() == []

    r = await h.client.post("/friend-requests", json={"to": "bob"}, headers=h.auth("alice"))
    assert r.status_code == 201
    assert await log.new() == []  # a pending request changes no timeline
    r = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert r.status_code == 200
    both = [("friendship_changed", alice, bob), ("friendship_changed", bob, alice)]
    assert kinds(await log.new()) == sorted(both)

    status = await h.post("alice", "hello", **{"Idempotency-Key": "k1"})
    sid = ObjectId(status["id"])
    added = await log.new()
    assert kinds(added) == [("status_posted", alice, sid)]
    assert added[0]["state"] == "pending"
    r = await h.client.post(
        "/statuses", json={"text": "hello"}, headers={**h.auth("alice"), "Idempotency-Key": "k1"}
    )
    assert r.status_code == 200  # a replay records nothing
    assert await log.new() == []

    await h.delete("alice", status["id"])
    assert kinds(await log.new()) == [("status_deleted", alice, sid)]

    await h.unfriend("alice", "bob")
    assert kinds(await log.new()) == sorted(both)
    await h.unfriend("alice", "bob")  # idempotent: nothing to end, nothing recorded
    assert await log.new() == []

    # Crossing requests: the second one settles the friendship, recorded once.
    r = await h.client.post("/friend-requests", json={"to": "alice"}, headers=h.auth("carol"))
    assert r.status_code == 201
    r = await h.client.post("/friend-requests", json={"to": "carol"}, headers=h.auth("alice"))
    assert (r.status_code, r.json()["status"]) == (200, "accepted")
    pair = [("friendship_changed", alice, carol), ("friendship_changed", carol, alice)]
    assert kinds(await log.new()) == sorted(pair)
    r = await h.client.post("/friend-requests", json={"to": "carol"}, headers=h.auth("alice"))
    assert (r.status_code, r.json()["status"]) == (200, "accepted")  # already friends
    assert await log.new() == []


@pytest.mark.parametrize("transactions", [True, False])
async def test_failed_requests_record_nothing(h: Harness, transactions: bool) -> None:
    """Also without transactions, where the events are staged before the change: a failed
    change deletes them (a 404 accept used to leave two staged events behind)."""
    if not transactions:
        without_transactions(h)
    await h.user("alice")
    await h.user("bob")
    mine = await h.post("alice", "mine", **{"Idempotency-Key": "k1"})
    log = EventLog()
    await log.new()
    alice, bob = h.auth("alice"), h.auth("bob")
    bad_token = {"Authorization": "Bearer not-a-token"}
    reused_key = {**alice, "Idempotency-Key": "k1"}
    as_json = {**alice, "Content-Type": "application/json"}
    failures: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/statuses", {"json": {"text": ""}, "headers": alice}, 422),
        ("POST", "/statuses", {"json": {"text": "x" * 5001}, "headers": alice}, 422),
        ("POST", "/statuses", {"content": b"{not json", "headers": as_json}, 400),
        ("POST", "/statuses", {"json": {"text": "hi"}}, 401),
        ("POST", "/statuses", {"json": {"text": "hi"}, "headers": bad_token}, 401),
        ("POST", "/statuses", {"json": {"text": "other"}, "headers": reused_key}, 422),
        ("DELETE", f"/statuses/{mine['id']}", {"headers": bob}, 404),
        ("DELETE", f"/statuses/{ObjectId()}", {"headers": alice}, 404),
        ("POST", "/friend-requests", {"json": {"to": "alice"}, "headers": alice}, 422),
        ("POST", "/friend-requests", {"json": {"to": "nobody"}, "headers": alice}, 404),
        ("POST", "/friend-requests/bob/accept", {"headers": alice}, 404),
        ("DELETE", "/friends/nobody", {"headers": alice}, 404),
    ]  # fmt: skip
    for method, path, kwargs, code in failures:
        r = await h.client.request(method, path, **kwargs)
        assert r.status_code == code, (method, path, r.text)
        assert await log.new() == [], (method, path)
    assert await h.ctx.store.statuses.count_documents({}) == 1
    assert (await h.client.get("/health")).json()["pending_events"] == 1  # the post's


async def test_a_failing_change_leaves_no_event(h: Harness) -> None:
    """The change and its events commit together: a fault after the status insert (inside the
    transaction) leaves neither the status nor its event."""
    assert h.ctx.database.supports_transactions
    await h.user("alice")

    async def broken(status: dict[str, Any], *, session: Any) -> None:
        raise RuntimeError("injected fault after the insert")

    h.ctx.strategy.status_created = broken  # type: ignore[method-assign]
    r = await h.client.post("/statuses", json={"text": "lost"}, headers=h.auth("alice"))
    assert r.status_code == 500
    assert await h.ctx.store.statuses.count_documents({}) == 0
    assert await all_events() == []


async def test_without_transactions_events_are_staged_first_and_fan_out(h: Harness) -> None:
    without_transactions(h)
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    # While the change is written, its event already exists, staged: a crash cannot lose it.
    seen_during_change: list[list[str]] = []
    created = h.ctx.strategy.status_created

    async def spy(status: dict[str, Any], *, session: Any) -> None:
        assert session is None  # no transaction on this path
        events = await h.ctx.store.events.find({"status_id": status["_id"]}).to_list()
        seen_during_change.append([e["state"] for e in events])
        await created(status, session=session)

    h.ctx.strategy.status_created = spy  # type: ignore[method-assign]
    status = await h.post("alice", "no transactions here")
    assert seen_during_change == [["staged"]]
    # Afterwards it is pending: nothing is left staged.
    states = [e["state"] for e in await all_events()]
    assert "staged" not in states
    assert states.count("pending") == 3  # two for the friendship, one for the post
    assert (await h.timeline_ids("alice"))[0] == status["id"]
    assert await h.drain() == 3
    assert await h.timeline_ids("bob") == [status["id"]]
    await h.delete("alice", status["id"])
    await h.unfriend("bob", "alice")
    assert await h.drain() == 3
    assert await h.timeline_ids("bob") == []
    assert (await h.client.get("/health")).json()["pending_events"] == 0


async def test_a_staged_event_left_behind_is_applied_once_its_change_landed(h: Harness) -> None:
    """A writer that crashed between its change and the promotion leaves a staged event: past
    STAGED_GRACE_S the worker applies it if its change is in the database. One whose change
    never happened is not applied: it is looked at again, then dropped after STAGED_CHECKS
    looks. A young one is left to its writer."""
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    await h.drain()
    status = await h.post("alice", "the writer crashed before the flip")
    events = h.ctx.store.events
    old = utcnow() - timedelta(seconds=STAGED_GRACE_S + 1)
    crashed = await events.find_one_and_update(
        {"status_id": ObjectId(status["id"])}, {"$set": {"state": "staged", "created_at": old}}
    )
    assert crashed is not None
    alice = ObjectId((await h.client.get("/me", headers=h.auth("alice"))).json()["id"])
    never_happened = {
        "kind": "status_posted",
        "author_id": alice,
        "status_id": ObjectId(),
        "attempts": 0,
        "lease_until": None,
    }
    await events.insert_one({**never_happened, "state": "staged", "created_at": old})
    young = {**never_happened, "status_id": ObjectId()}
    await events.insert_one({**young, "state": "staged", "created_at": utcnow()})
    assert (await h.client.get("/health")).json()["pending_events"] == 3

    assert await h.drain() == 1
    assert await h.timeline_ids("bob") == [status["id"]]
    applied = await events.find_one({"_id": crashed["_id"]})
    assert applied is not None and applied["state"] == "done"
    for look in range(2, STAGED_CHECKS + 1):
        waiting = await events.find_one({"status_id": never_happened["status_id"]})
        assert waiting is not None and waiting["state"] == "staged"
        assert waiting["checks"] == look - 1 and waiting["lease_until"] > utcnow()
        # The worker's next look is due (its clock moved on).
        await events.update_one({"_id": waiting["_id"]}, {"$set": {"lease_until": old}})
        assert await h.drain() == 0
    assert await events.find_one({"status_id": never_happened["status_id"]}) is None
    left = await events.find({"state": {"$ne": "done"}}).to_list()
    assert [(e["state"], e["status_id"]) for e in left] == [("staged", young["status_id"])]
    assert (await h.client.get("/health")).json()["pending_events"] == 1


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_without_transactions_a_change_failing_after_its_insert_is_published(
    h: Harness,
) -> None:
    """Without a transaction a fault after the status insert cannot undo the insert: the
    status is published (its event promoted at once), consistently everywhere."""
    without_transactions(h)
    await h.user("alice")

    async def broken(status: dict[str, Any], *, session: Any) -> None:
        raise RuntimeError("injected fault after the insert")

    created = h.ctx.strategy.status_created
    h.ctx.strategy.status_created = broken  # type: ignore[method-assign]
    r = await h.client.post("/statuses", json={"text": "half written"}, headers=h.auth("alice"))
    assert r.status_code == 500
    h.ctx.strategy.status_created = created  # type: ignore[method-assign]
    [event] = await all_events()
    assert event["state"] == "pending"
    assert await h.drain() == 1
    statuses = await h.ctx.store.statuses.find({}).to_list()
    assert [s["_id"] for s in statuses] == [event["status_id"]]
    assert await h.timeline_ids("alice") == [str(event["status_id"])]
    assert (await h.client.get("/health")).json()["pending_events"] == 0


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_without_transactions_a_change_failing_before_it_writes_leaves_nothing(
    h: Harness,
) -> None:
    without_transactions(h)
    await h.user("alice")

    async def broken(status: dict[str, Any], *, session: Any) -> None:
        raise RuntimeError("injected fault before the insert")

    h.ctx.strategy.prepare_status = broken  # type: ignore[method-assign]
    r = await h.client.post("/statuses", json={"text": "never"}, headers=h.auth("alice"))
    assert r.status_code == 500
    assert await all_events() == []
    assert await h.ctx.store.statuses.count_documents({}) == 0
    assert (await h.client.get("/health")).json()["pending_events"] == 0


class SkewedWriterClock:
    """The API's clock an hour behind the worker's: every staged event looks past its grace
    to the worker at once (as a writer slower than the grace does)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(outbox, "utcnow", lambda: utcnow() - timedelta(hours=1))


@pytest.mark.parametrize("dropped", [False, True], ids=["deferred", "dropped"])
async def test_without_transactions_a_slow_unfriend_is_applied_after_it_lands(
    h: Harness, monkeypatch: pytest.MonkeyPatch, dropped: bool
) -> None:
    """The worker runs while an unfriend is still being written, its event already old by the
    worker's clock. Applied then, it would find the two still friends, and the ex-friend would
    see the author for good. It must wait for the change; and if the worker dropped it (after
    STAGED_CHECKS looks, here 1), the writer records it again once the change lands."""
    without_transactions(h)
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    mine = await h.post("alice", "before the unfriend")
    await h.drain()
    assert await h.timeline_ids("bob") == [mine["id"]]
    SkewedWriterClock(monkeypatch)
    if dropped:
        monkeypatch.setattr(queue, "STAGED_CHECKS", 1)
    unlink = h.ctx.graph.unlink
    applied_meanwhile: list[int] = []

    async def slow_unlink(a: ObjectId, b: ObjectId, *, session: Any) -> None:
        applied_meanwhile.append(await h.drain())
        left = await h.ctx.store.events.count_documents({"state": "staged"})
        assert left == (0 if dropped else 2)
        await unlink(a, b, session=session)

    monkeypatch.setattr(h.ctx.graph, "unlink", slow_unlink)
    await h.unfriend("bob", "alice")
    assert applied_meanwhile == [0]
    assert await h.drain() == 2
    assert await h.timeline_ids("bob") == []
    assert await h.timeline_ids("alice") == [mine["id"]]
    assert (await h.client.get("/health")).json()["pending_events"] == 0


async def test_without_transactions_a_slow_post_is_applied_after_it_lands(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a post: applied before the insert, its fan-out would find no status and
    the status would never reach the author's friends."""
    without_transactions(h)
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    await h.drain()
    SkewedWriterClock(monkeypatch)
    prepare = h.ctx.strategy.prepare_status
    applied_meanwhile: list[int] = []

    async def slow_prepare(status: dict[str, Any], *, session: Any) -> None:
        applied_meanwhile.append(await h.drain())
        await prepare(status, session=session)

    h.ctx.strategy.prepare_status = slow_prepare  # type: ignore[method-assign]
    status = await h.post("alice", "slow to land")
    assert applied_meanwhile == [0]
    assert await h.drain() == 1
    assert await h.timeline_ids("bob") == [status["id"]]
    assert (await h.client.get("/health")).json()["pending_events"] == 0


async def test_without_transactions_a_half_written_friendship_is_completed_by_a_retry(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault between the two edges of an accept (or of an unfriend): the client's retry
    completes it. (The accept used to delete the request first, so its retry was a 404 and
    the friendship stayed one-sided for good; the unfriend's retry saw no friendship.)"""
    without_transactions(h)
    for name in ("alice", "bob"):
        await h.user(name)
    mine = await h.post("alice", "for bob")
    link, unlink = h.ctx.graph.link, h.ctx.graph.unlink

    async def first_edge_only(a: ObjectId, b: ObjectId, *, session: Any) -> tuple[bool, bool]:
        await h.ctx.store.friendships.insert_one({"user_id": a, "friend_id": b})
        raise RuntimeError("injected fault between the edges")

    r = await h.client.post("/friend-requests", json={"to": "bob"}, headers=h.auth("alice"))
    assert r.status_code == 201
    monkeypatch.setattr(h.ctx.graph, "link", first_edge_only)
    r = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert r.status_code == 500
    monkeypatch.setattr(h.ctx.graph, "link", link)
    r = await h.client.post("/friend-requests/alice/accept", headers=h.auth("bob"))
    assert r.status_code == 200, r.text
    assert await h.ctx.store.friendships.count_documents({}) == 2
    await h.drain()
    assert await h.timeline_ids("bob") == [mine["id"]]

    async def first_edge_gone(a: ObjectId, b: ObjectId, *, session: Any) -> None:
        await h.ctx.store.friendships.delete_one({"user_id": a, "friend_id": b})
        raise RuntimeError("injected fault between the edges")

    monkeypatch.setattr(h.ctx.graph, "unlink", first_edge_gone)
    r = await h.client.delete("/friends/alice", headers=h.auth("bob"))
    assert r.status_code == 500
    monkeypatch.setattr(h.ctx.graph, "unlink", unlink)
    await h.unfriend("bob", "alice")
    assert await h.ctx.store.friendships.count_documents({}) == 0
    await h.drain()
    assert await h.timeline_ids("bob") == []
    assert (await h.client.get("/health")).json()["pending_events"] == 0
