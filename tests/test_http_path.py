"""The hot path of `GET /timeline` (issue 23): the round trips one request costs, and the
guarantees that the memory behind them keeps: a revoked token stops working within a second on
every API process, rate limits bound a client across processes within their documented slack,
and an activity record changed behind the service's back is seen within ACTIVITY_CACHE_S."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import pytest
from bson import ObjectId

from app.api import throttle
from app.domain import activity, oauth
from app.domain.users import TOKEN_CACHE_S, TokenCache
from app.limits import ratelimit
from benchmarks.monitor import CommandCounter, Window
from tests import harness
from tests.harness import Harness, listen_to_clients, running

# The commands of this module's clients (only those inside an open window are counted,
# benchmarks.monitor). Attached to the clients these tests create, not registered process-wide:
# a global listener makes PyMongo draw operation ids from the global `random` in every test of
# the process, which hypothesis-driven tests then see as a strategy using `random`.
COMMANDS = CommandCounter()


@pytest.fixture(autouse=True)
def counted_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    listen_to_clients(monkeypatch, COMMANDS)


class Ticks:
    """A monotonic clock for the caches: time passes only by `advance`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def counted() -> Iterator[Window]:
    with COMMANDS.window() as w:
        yield w


def token_cache(h: Harness) -> TokenCache:
    cache: TokenCache = h.app.state.tokens
    return cache


@pytest.fixture
def no_background_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limits' background sync waits longer than any test: the commands counted are
    the request's own."""
    monkeypatch.setattr(ratelimit, "SYNC_INTERVAL_S", 3600.0)


@pytest.mark.parametrize("strategy", ["receiver_copies"])
@pytest.mark.usefixtures("no_background_sync")
async def test_a_timeline_page_costs_the_page_and_the_removal_check(h: Harness) -> None:
    """A regression guard on the count, not on time: a reader's page is one command, the page's
    query and the revocation check together (app.domain.timeline_reads, ReadsWithPrelude); the
    token, the activity record and the rate limits are answered from this process's memory once
    it has looked them up."""
    ticks = Ticks()
    token_cache(h).clock = ticks
    h.ctx.activity.ticks = ticks
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    for i in range(25):
        await h.post("bob", f"status {i}")
    await h.drain()
    ticks.advance(TOKEN_CACHE_S)
    with counted() as cold:
        first = await h.timeline("alice")
    assert len(first["items"]) == 20
    # The first page of a reader: the `reads` counter (sent and read back), the token, the
    # activity record (looked up, then inserted: the first read ever), the page with its check.
    assert cold.commands == {
        ("update", "rate_limits"): 1,
        ("find", "rate_limits"): 1,
        ("find", "users"): 1,
        ("find", "user_activity"): 1,
        ("update", "user_activity"): 1,
        ("aggregate", "timeline_entries"): 1,
    }, cold.commands
    with counted() as warm:
        again = await h.timeline("alice")
    assert again == first
    assert warm.round_trips == 1 and warm.commands == {("aggregate", "timeline_entries"): 1}, (
        warm.commands
    )
    # The token is looked up again once it is TOKEN_CACHE_S old, and only it.
    ticks.advance(TOKEN_CACHE_S)
    with counted() as later:
        await h.timeline("alice")
    assert later.commands[("find", "users")] == 1 and later.round_trips == 2


@asynccontextmanager
async def two_processes(mongo_url: str, **extra: object) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two API instances over one database, as two `timeline serve` processes would be."""
    settings = harness.test_settings(mongo_url, "receiver_copies", **extra)
    async with running(settings) as a, running(settings) as b:
        yield a, b


async def test_a_revoked_token_stops_working_on_every_process_within_a_second(
    mongo_url: str,
) -> None:
    assert TOKEN_CACHE_S <= 1.0
    async with two_processes(mongo_url) as (a, b):
        ticks_a, ticks_b = Ticks(), Ticks()
        token_cache(a).clock, token_cache(b).clock = ticks_a, ticks_b
        await a.user("alice")
        store = a.ctx.store
        client, secret = await oauth.create_app(store, "test", ["urn:x"], ("read",), None)
        alice = await store.users.find_one({"handle": "alice"})
        assert alice is not None
        grant = await oauth.mint(store, client, ("read",), alice["_id"])
        bearer = {"Authorization": f"Bearer {grant.token}"}
        for h in (a, b):
            assert (await h.client.get("/me", headers=bearer)).status_code == 200
        creds = {"client_id": client["client_id"], "client_secret": secret}
        r = await b.client.post("/oauth/revoke", data={**creds, "token": grant.token})
        assert r.status_code == 200
        # The process that revoked it refuses it at once; the other answers from its memory
        # until the look-up is TOKEN_CACHE_S old, then refuses it too.
        assert (await b.client.get("/me", headers=bearer)).status_code == 401
        ticks_a.advance(TOKEN_CACHE_S * 0.9)
        assert (await a.client.get("/me", headers=bearer)).status_code == 200
        ticks_a.advance(TOKEN_CACHE_S * 0.1)
        assert (await a.client.get("/timeline", headers=bearer)).status_code == 401
        # An account's own token whose document is gone: the same bound.
        assert (await a.client.get("/me", headers=a.auth("alice"))).status_code == 200
        await store.users.delete_one({"_id": alice["_id"]})
        ticks_a.advance(TOKEN_CACHE_S)
        assert (await a.client.get("/me", headers=a.auth("alice"))).status_code == 401


class LimiterClock:
    """The limiters' clock (fixed windows): one window for the whole test."""

    def __call__(self) -> float:
        return 1_800_000_000.0 - 1_800_000_000.0 % 86400


async def test_rate_limits_bound_a_client_across_processes(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client alternating between two processes gets at least the limit and at most the
    limit plus one allowance (limit // LOCAL_SHARE) per process (app.limits.ratelimit)."""
    monkeypatch.setattr(throttle, "REFUSAL_DELAY_S", 0.0)  # refusals answered at once
    limit = 100
    allowance = limit // ratelimit.LOCAL_SHARE
    async with two_processes(mongo_url, rate_limits=f"*={limit}/1h") as (a, b):
        a.ctx.limiter.clock = b.ctx.limiter.clock = LimiterClock()
        await a.user("alice")
        admitted = 0
        for i in range(2 * limit):
            h = (a, b)[i % 2]
            r = await h.client.get("/timeline", headers=a.auth("alice"))
            assert r.status_code in (200, 429), r.text
            admitted += r.status_code == 200
        assert limit - 1 <= admitted <= limit - 1 + 2 * allowance  # sign-up took one `address`
        # Both processes refuse from now on, and the shared counter holds every admitted hit (a
        # sync sends what was unsent), and at most one refused hit per process (a refusal that
        # waited for a sync was counted, as the first refusal always was).
        for h in (a, b):
            assert (await h.client.get("/timeline", headers=a.auth("alice"))).status_code == 429
            async with h.ctx.limiter._sync_lock:
                await h.ctx.limiter._sync()
        docs = await a.ctx.limiter.coll.find({"_id": {"$regex": "^reads\\|"}}).to_list()
        assert len(docs) == 1 and admitted <= docs[0]["n"] <= admitted + 2


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_an_activity_record_aged_behind_the_service_is_seen_within_the_cache_time(
    h: Harness,
) -> None:
    ticks = Ticks()
    h.ctx.activity.ticks = ticks
    await h.user("alice")
    await h.timeline("alice")
    alice = (await h.ctx.store.users.find_one({"handle": "alice"}))["_id"]
    away = h.ctx.activity.clock() - timedelta(days=h.ctx.settings.timeline_active_days + 1)
    await h.ctx.store.user_activity.update_one({"_id": alice}, {"$set": {"last_read_at": away}})
    await h.timeline("alice")  # answered from memory: still the materialized timeline
    assert await h.ctx.store.events.count_documents({"kind": "timeline_rebuild"}) == 0
    ticks.advance(activity.ACTIVITY_CACHE_S)
    await h.timeline("alice")  # looked up again: the return, served from the truth
    doc = await h.ctx.store.user_activity.find_one({"_id": ObjectId(alice)})
    assert doc is not None and doc["materialized"] is False and doc["returns"] == 1
    assert await h.ctx.store.events.count_documents({"kind": "timeline_rebuild"}) == 1
