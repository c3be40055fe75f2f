"""`Idempotency-Key` on POST /statuses under concurrency: one status per (user, key), replays
answered 200 with the same object, a different body refused with 422, keys scoped per user,
stale in-flight claims taken over, and records kept for a documented 24 hours."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.domain.statuses import IN_FLIGHT_STALE_S
from app.storage.models import IDEMPOTENCY_TTL_SECONDS, utcnow
from fanout.housekeeping import prune
from tests.harness import Harness
from tests.test_outbox import without_transactions

# Concurrent requests per burst: enough to interleave every step of the claim several times.
CONCURRENT = 20


async def statuses_of(h: Harness, handle: str) -> list[dict[str, Any]]:
    return await h.ctx.store.statuses.find({"author": handle}).to_list()


async def posted_events(h: Harness) -> int:
    return await h.ctx.store.events.count_documents({"kind": "status_posted"})


async def send(h: Harness, handle: str, text: str, key: str) -> httpx.Response:
    return await h.client.post(
        "/statuses", json={"text": text}, headers={**h.auth(handle), "Idempotency-Key": key}
    )


async def test_concurrent_retries_create_exactly_one_status(h: Harness) -> None:
    await h.user("alice")
    responses = await asyncio.gather(*(send(h, "alice", "once", "k1") for _ in range(CONCURRENT)))
    codes = Counter(r.status_code for r in responses)
    assert codes[201] == 1, codes
    assert set(codes) <= {201, 200, 409}, codes
    created = next(r.json() for r in responses if r.status_code == 201)
    for r in responses:
        if r.status_code == 200:
            assert r.json() == created
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_in_flight"
    assert [str(s["_id"]) for s in await statuses_of(h, "alice")] == [created["id"]]
    assert await posted_events(h) == 1
    # Once the first has finished, every retry is a replay.
    again = await asyncio.gather(*(send(h, "alice", "once", "k1") for _ in range(CONCURRENT)))
    assert all(r.status_code == 200 and r.json() == created for r in again)
    assert len(await statuses_of(h, "alice")) == 1
    await h.drain()
    assert await h.timeline_ids("alice") == [created["id"]]


async def test_a_different_body_with_the_same_key_is_refused(h: Harness) -> None:
    await h.user("alice")
    texts = ["same"] * (CONCURRENT - 1) + ["different"]
    responses = await asyncio.gather(*(send(h, "alice", t, "k2") for t in texts))
    winners = [(t, r) for t, r in zip(texts, responses, strict=True) if r.status_code == 201]
    assert len(winners) == 1
    winning_text = winners[0][0]
    for text, r in zip(texts, responses, strict=True):
        if text != winning_text:
            # Whichever body claimed the key first, the other body is refused, in flight or not.
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "idempotency_key_reused"
        else:
            assert r.status_code in (200, 201, 409)
    assert len(await statuses_of(h, "alice")) == 1
    r = await send(h, "alice", "yet another text", "k2")
    assert r.status_code == 422


async def test_keys_are_scoped_per_user(h: Harness) -> None:
    for name in ("alice", "bob"):
        await h.user(name)
    names = [name for name in ("alice", "bob") for _ in range(5)]
    responses = await asyncio.gather(*(send(h, name, "hello", "shared-key") for name in names))
    created = {r.json()["author"]: r.json() for r in responses if r.status_code == 201}
    assert sorted(created) == ["alice", "bob"] and len({s["id"] for s in created.values()}) == 2
    # Every other response is a replay of its own user's status or an in-flight refusal: the
    # other user's claim on the same key changes nothing for it.
    for name, r in zip(names, responses, strict=True):
        assert r.status_code in (200, 201, 409), r.text
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_in_flight", r.text
        else:
            assert r.json() == created[name], r.text
    for name in ("alice", "bob"):
        assert [str(s["_id"]) for s in await statuses_of(h, name)] == [created[name]["id"]]


async def test_a_stale_in_flight_claim_is_taken_over(h: Harness) -> None:
    """A claim whose request died (crash between claim and commit) blocks retries with 409
    only for IN_FLIGHT_STALE_S; then a retry takes it over. The clock is faked by ageing the
    claim's created_at."""
    await h.user("alice")
    first = await h.post("alice", "warm-up")
    keys = h.ctx.store.idempotency_keys
    user_id = (await h.ctx.database.db["users"].find_one({"handle": "alice"}))["_id"]
    body_hash = hashlib.sha256(b"crashed").hexdigest()
    await keys.insert_one(
        {
            "user_id": user_id,
            "key": "k3",
            "body_hash": body_hash,
            "state": "in_flight",
            "status_id": None,
            "response": None,
            "created_at": utcnow(),
        }
    )
    r = await send(h, "alice", "crashed", "k3")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "idempotency_in_flight")
    await keys.update_one(
        {"user_id": user_id, "key": "k3"},
        {"$set": {"created_at": utcnow() - timedelta(seconds=IN_FLIGHT_STALE_S + 1)}},
    )
    # Many retries race for the stale claim: exactly one takes it over.
    responses = await asyncio.gather(*(send(h, "alice", "crashed", "k3") for _ in range(10)))
    codes = Counter(r.status_code for r in responses)
    assert codes[201] == 1 and set(codes) <= {200, 201, 409}, codes
    assert len(await statuses_of(h, "alice")) == 2
    taken = next(r.json() for r in responses if r.status_code == 201)
    assert await h.timeline_ids("alice") == [taken["id"], first["id"]]


async def test_keys_expire_after_a_documented_time(h: Harness) -> None:
    await h.user("alice")
    assert IDEMPOTENCY_TTL_SECONDS == 24 * 3600
    first = (await send(h, "alice", "daily", "k4")).json()
    # The workers' housekeeping (fanout.housekeeping) keeps the key for a day, then removes it.
    keep = timedelta(seconds=IDEMPOTENCY_TTL_SECONDS)
    assert (
        await prune(h.ctx.store, now=utcnow() + keep - timedelta(minutes=1))
    ).idempotency_keys == 0
    assert (await send(h, "alice", "daily", "k4")).json()["id"] == first["id"]
    assert (
        await prune(h.ctx.store, now=utcnow() + keep + timedelta(minutes=1))
    ).idempotency_keys == 1
    r = await send(h, "alice", "daily", "k4")
    assert r.status_code == 201
    assert r.json()["id"] != first["id"]


@pytest.mark.parametrize("strategy", ["receiver_copies", "recipients_embedded"])
@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "staged"])
async def test_a_retry_after_a_partial_failure_creates_no_second_status(
    h: Harness, transactions: bool
) -> None:
    """The post fails after the status insert (a fault in the author's own copy). Without a
    transaction the insert stays: the key stays bound to that status, the retry finishes it
    and answers it, and nothing else is published. With one, nothing stayed, and the retry
    creates it once."""
    if not transactions:
        without_transactions(h)
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    created = h.ctx.strategy.status_created

    async def broken(status: dict[str, Any], *, session: Any) -> None:
        raise RuntimeError("injected fault after the insert")

    h.ctx.strategy.status_created = broken  # type: ignore[method-assign]
    first = await send(h, "alice", "once only", "k5")
    assert first.status_code == 500
    h.ctx.strategy.status_created = created  # type: ignore[method-assign]
    await h.drain()  # whatever the failed attempt left is applied before the retry
    retry = await send(h, "alice", "once only", "k5")
    assert retry.status_code == 201, retry.text
    status = retry.json()
    assert [str(s["_id"]) for s in await statuses_of(h, "alice")] == [status["id"]]
    assert (await send(h, "alice", "once only", "k5")).json() == status  # a replay now
    await h.drain()
    assert await h.timeline_ids("alice") == [status["id"]]
    assert await h.timeline_ids("bob") == [status["id"]]
    assert (await h.client.get("/health")).json()["pending_events"] == 0


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_a_retry_after_the_status_was_deleted_does_not_bring_it_back(h: Harness) -> None:
    """Without transactions: the post failed after its insert, the author deleted the status
    (it was published), then the client retries: a replay, not the status again."""
    without_transactions(h)
    await h.user("alice")
    created = h.ctx.strategy.status_created

    async def broken(status: dict[str, Any], *, session: Any) -> None:
        raise RuntimeError("injected fault after the insert")

    h.ctx.strategy.status_created = broken  # type: ignore[method-assign]
    assert (await send(h, "alice", "regretted", "k6")).status_code == 500
    h.ctx.strategy.status_created = created  # type: ignore[method-assign]
    [orphan] = await statuses_of(h, "alice")
    await h.delete("alice", str(orphan["_id"]))
    retry = await send(h, "alice", "regretted", "k6")
    assert retry.status_code == 200 and retry.json()["id"] == str(orphan["_id"])
    assert await statuses_of(h, "alice") == []
    await h.drain()
    assert await h.timeline_ids("alice") == []
    assert (await h.client.get("/health")).json()["pending_events"] == 0
