"""Rate limits (app.limits.ratelimit) with their real defaults, through the API; the pending friend
request cap (app.domain.friends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from bson import ObjectId

from app.api import throttle
from app.domain.friends import MAX_PENDING_OUTGOING
from app.limits import ratelimit
from app.limits.ratelimit import RULES, RateLimited, client_address, parse_rules, rules_for
from app.settings import ConfigError, load_settings
from app.storage.models import utcnow
from tests import harness
from tests.harness import Harness, running


class Clock:
    """The limiter's clock: time passes only by `advance` (windows are fixed, so a test starts
    at the beginning of one)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0 - 1_800_000_000.0 % 86400

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_refusal_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals answered at once (the delay is time, faked here; tested on its own below)."""
    monkeypatch.setattr(throttle, "REFUSAL_DELAY_S", 0.0)


@pytest.fixture
async def hd(mongo_url: str) -> AsyncIterator[tuple[Harness, Clock]]:
    """A harness with the default limits (RATE_LIMITS unset) and a fake clock."""
    async with running(harness.test_settings(mongo_url, "receiver_copies", rate_limits="")) as h:
        clock = Clock()
        h.ctx.limiter.clock = clock
        yield h, clock


def assert_429(r: httpx.Response, rule: str, limit: int | None = None) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"]["code"] == "rate_limited" and rule in body["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit"] == str(limit or RULES[rule].limit)
    assert r.headers["x-ratelimit-remaining"] == "0"
    datetime.fromisoformat(r.headers["x-ratelimit-reset"])
    assert r.headers["cache-control"] == "no-store"


async def test_sign_ups_are_limited_per_address_then_the_window_resets(
    hd: tuple[Harness, Clock],
) -> None:
    h, clock = hd
    for i in range(RULES["sign_up"].limit):
        r = await h.client.post("/users", json={"handle": f"user{i}"})
        assert r.status_code == 201, r.text
        assert r.headers["x-ratelimit-remaining"] == str(RULES["sign_up"].limit - i - 1)
    refused = await h.client.post("/users", json={"handle": "squatter"})
    assert_429(refused, "sign_up")
    assert int(refused.headers["retry-after"]) == RULES["sign_up"].period_s
    assert await h.ctx.store.users.count_documents({}) == RULES["sign_up"].limit
    # A flood of refused requests costs the database nothing more: the process knows.
    counters = await h.ctx.limiter.coll.find({}).sort("_id", 1).to_list()
    for _ in range(20):
        assert_429(await h.client.post("/users", json={"handle": "squatter"}), "sign_up")
    assert await h.ctx.limiter.coll.find({}).sort("_id", 1).to_list() == counters
    # A forged X-Forwarded-For is not believed (no trusted proxy by default).
    forged = await h.client.post(
        "/users", json={"handle": "squatter"}, headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert_429(forged, "sign_up")
    clock.now += RULES["sign_up"].period_s
    assert (await h.client.post("/users", json={"handle": "squatter"})).status_code == 201


async def test_a_trusted_proxy_hop_keys_on_the_address_it_saw(mongo_url: str) -> None:
    settings = harness.test_settings(
        mongo_url, "receiver_copies", rate_limits="", trusted_proxy_hops=1
    )
    async with running(settings) as h:
        h.ctx.limiter.clock = Clock()
        limit = RULES["sign_up"].limit
        for i in range(limit):
            # What the client wrote (left) is ignored; the proxy appended 198.51.100.1.
            xff = f"10.0.0.{i}, 198.51.100.1"
            r = await h.client.post(
                "/users", json={"handle": f"proxied{i}"}, headers={"X-Forwarded-For": xff}
            )
            assert r.status_code == 201, r.text
        r = await h.client.post(
            "/users", json={"handle": "proxied_last"}, headers={"X-Forwarded-For": "198.51.100.1"}
        )
        assert_429(r, "sign_up")
        other = await h.client.post(
            "/users", json={"handle": "other0"}, headers={"X-Forwarded-For": "198.51.100.2"}
        )
        assert other.status_code == 201, other.text


async def test_reads_are_limited_per_token_not_per_user_of_the_address(
    hd: tuple[Harness, Clock],
) -> None:
    h, clock = hd
    await h.user("alice")
    await h.user("bob")
    limit = RULES["reads"].limit
    for _ in range(limit):
        assert (await h.client.get("/me", headers=h.auth("alice"))).status_code == 200
    assert_429(await h.client.get("/timeline", headers=h.auth("alice")), "reads")
    # Another token at the same address is not slowed by alice's reads.
    r = await h.client.get("/me", headers=h.auth("bob"))
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == str(limit)
    clock.now += RULES["reads"].period_s
    assert (await h.client.get("/me", headers=h.auth("alice"))).status_code == 200


async def test_posts_have_their_own_limit(mongo_url: str) -> None:
    settings = harness.test_settings(mongo_url, "receiver_copies", rate_limits="posts=3/1h")
    async with running(settings) as h:
        h.ctx.limiter.clock = Clock()
        await h.user("alice")
        for i in range(3):
            await h.post("alice", f"post {i}")
        r = await h.client.post("/statuses", json={"text": "one too many"}, headers=h.auth("alice"))
        assert_429(r, "posts", 3)
        assert await h.ctx.store.statuses.count_documents({}) == 3
        # Reads are another rule: still served.
        assert (await h.client.get("/timeline", headers=h.auth("alice"))).status_code == 200


async def test_hit_counts_failed_logins_and_maps_to_429(hd: tuple[Harness, Clock]) -> None:
    h, _ = hd
    rule = RULES["failed_login"]
    for _ in range(rule.limit):
        await ratelimit.check(h.ctx, "failed_login", "account:x")
        await ratelimit.hit(h.ctx, "failed_login", "account:x")
    with pytest.raises(RateLimited) as refused:
        await ratelimit.hit(h.ctx, "failed_login", "account:x")
    assert refused.value.code == "rate_limited" and refused.value.retry_after_s >= 1
    with pytest.raises(RateLimited):
        await ratelimit.check(h.ctx, "failed_login", "account:x")
    await ratelimit.check(h.ctx, "failed_login", "account:y")  # another key is untouched


def test_the_path_table_covers_the_mastodon_api() -> None:
    assert rules_for("POST", "/api/v1/accounts", False) == ["sign_up", "unauthenticated", "address"]
    assert rules_for("POST", "/oauth/token", False) == ["login", "unauthenticated", "address"]
    assert rules_for("POST", "/api/v1/statuses", True) == [
        "posts",
        "posts_burst",
        "writes",
        "address",
    ]
    assert rules_for("POST", "/api/v1/accounts/123/follow", True)[0] == "friend_requests"
    assert rules_for("GET", "/api/v2/search", True) == ["reads", "address"]
    assert rules_for("GET", "/health", False) == []


def test_client_address_trusts_only_the_configured_hops() -> None:
    assert client_address("127.0.0.1", ["6.6.6.6"], 0) == "127.0.0.1"
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4"], 1) == "1.2.3.4"
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4", "10.0.0.1"], 2) == "1.2.3.4"
    assert client_address("127.0.0.1", ["not an ip"], 1) == "127.0.0.1"
    # One IPv6 host has a /64: it is one address to the limits.
    assert client_address("2001:db8::1", [], 0) == client_address("2001:db8::ffff", [], 0)


def test_rate_limit_settings_are_checked_at_start() -> None:
    rules = parse_rules("posts=10/2h, *=5/1s")
    assert rules is not None and rules["posts"].limit == 5 and rules["sign_up"].period_s == 1
    assert parse_rules("off") is None
    for bad in ("posts=10", "nosuch=1/1s", "posts=0/1h"):
        with pytest.raises(ConfigError, match="RATE_LIMITS"):
            load_settings(_env_file=None, rate_limits=bad)


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_pending_outgoing_requests_are_capped(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    me = (await h.ctx.store.users.find_one({"handle": "alice"}))["_id"]
    await h.ctx.store.friend_requests.insert_many(
        [
            {"from_id": me, "to_id": ObjectId(), "created_at": utcnow()}
            for _ in range(MAX_PENDING_OUTGOING)
        ]
    )
    r = await h.client.post("/friend-requests", json={"to": "bob"}, headers=h.auth("alice"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "pending_limit", r.text
    assert await h.ctx.store.friend_requests.count_documents({"to_id": {"$ne": None}}) == (
        MAX_PENDING_OUTGOING
    )
    # bob may still ask alice: the cap is on what one sends.
    r = await h.client.post("/friend-requests", json={"to": "alice"}, headers=h.auth("bob"))
    assert r.status_code == 201, r.text


async def test_a_burst_of_posts_is_cut_short(hd: tuple[Harness, Clock]) -> None:
    h, clock = hd
    await h.user("alice")
    burst = RULES["posts_burst"]
    for i in range(burst.limit):
        await h.post("alice", f"post {i}")
    r = await h.client.post("/statuses", json={"text": "one more"}, headers=h.auth("alice"))
    assert_429(r, "posts_burst")
    clock.now += burst.period_s
    await h.post("alice", "a window later")


async def test_a_refusal_is_answered_after_a_delay(
    hd: tuple[Harness, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, _ = hd
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(throttle, "REFUSAL_DELAY_S", 1.0)
    monkeypatch.setattr(throttle, "_sleep", sleep)
    for i in range(RULES["sign_up"].limit):
        assert (await h.client.post("/users", json={"handle": f"user{i}"})).status_code == 201
    assert slept == []
    assert_429(await h.client.post("/users", json={"handle": "late"}), "sign_up")
    assert slept == [1.0]
