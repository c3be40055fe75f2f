"""POST /users, GET /users/{handle}, GET /me, on every strategy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.api.schemas import MAX_DISPLAY_NAME_CHARS
from tests.harness import Harness
from tests.test_api_errors import assert_error, snapshot

CREATED_KEYS = {"id", "handle", "display_name", "created_at", "token"}
PROFILE_KEYS = {"id", "handle", "display_name", "friend_count", "created_at"}


def assert_recent_rfc3339(value: str) -> None:
    """An RFC 3339 UTC time from the last minute (the clock of this machine)."""
    assert value.endswith("Z"), value
    when = datetime.fromisoformat(value)
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)


async def test_create_user_returns_the_contract_shape_and_a_working_token(h: Harness) -> None:
    r = await h.client.post("/users", json={"handle": "alice", "display_name": "Alice A."})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == CREATED_KEYS
    assert created["handle"] == "alice" and created["display_name"] == "Alice A."
    assert isinstance(created["id"], str) and created["id"]
    assert isinstance(created["token"], str) and len(created["token"]) >= 32
    assert_recent_rfc3339(created["created_at"])

    me = await h.client.get("/me", headers={"Authorization": f"Bearer {created['token']}"})
    assert me.status_code == 200, me.text
    profile = me.json()
    assert set(profile) == PROFILE_KEYS
    assert profile == {
        "id": created["id"],
        "handle": "alice",
        "display_name": "Alice A.",
        "friend_count": 0,
        "created_at": created["created_at"],
    }


async def test_display_name_is_optional_and_tokens_differ(h: Harness) -> None:
    alice = await h.user("alice")
    bob = await h.user("bob")
    assert alice["display_name"] is None
    assert alice["token"] != bob["token"] and alice["id"] != bob["id"]
    me = await h.client.get("/me", headers=h.auth("bob"))
    assert me.json()["handle"] == "bob"


async def test_only_a_hash_of_the_token_is_stored(h: Harness) -> None:
    created = await h.user("alice")
    docs = await h.ctx.store.users.find({}).to_list()
    assert len(docs) == 1
    stored = repr(docs[0])
    assert created["token"] not in stored
    assert docs[0]["token_hash"] != created["token"]


async def test_taken_handle_is_409_and_the_first_user_keeps_it(h: Harness) -> None:
    first = await h.user("alice", "First")
    before = await snapshot(h)
    r = await h.client.post("/users", json={"handle": "alice", "display_name": "Second"})
    assert_error(r, 409, "handle_taken")
    assert await snapshot(h) == before
    profile = (await h.client.get("/users/alice")).json()
    assert profile["id"] == first["id"] and profile["display_name"] == "First"


async def test_bad_handles_and_display_names_are_422(h: Harness) -> None:
    before = await snapshot(h)
    too_long_name = "n" * (MAX_DISPLAY_NAME_CHARS + 1)
    bodies = [
        {"handle": "ab"},  # too short
        {"handle": "a" * 31},  # too long
        {"handle": "Alice"},  # upper case
        {"handle": "al-ice"},
        {"handle": "al ice"},
        {"handle": "alice\n"},
        {"handle": "ålice"},
        {"handle": ""},
        {"handle": "alice", "display_name": too_long_name},
    ]
    for body in bodies:
        assert_error(await h.client.post("/users", json=body), 422, "validation_failed")
    assert await snapshot(h) == before
    # The bounds themselves are fine.
    for handle in ("abc", "a" * 30, "a_1_b"):
        await h.user(handle, "n" * MAX_DISPLAY_NAME_CHARS)


async def test_get_user_is_public_and_counts_friends(h: Harness) -> None:
    alice = await h.user("alice", "Alice")
    await h.user("bob")
    await h.user("carol")
    r = await h.client.get("/users/alice")  # no token needed
    assert r.status_code == 200, r.text
    profile = r.json()
    assert set(profile) == PROFILE_KEYS  # never the token or its hash
    assert profile["id"] == alice["id"] and profile["friend_count"] == 0

    await h.befriend("alice", "bob")
    await h.befriend("carol", "alice")
    assert (await h.client.get("/users/alice")).json()["friend_count"] == 2
    assert (await h.client.get("/users/bob")).json()["friend_count"] == 1
    me = await h.client.get("/me", headers=h.auth("alice"))
    assert me.json() == (await h.client.get("/users/alice")).json()

    await h.unfriend("bob", "alice")
    assert (await h.client.get("/users/alice")).json()["friend_count"] == 1
    assert (await h.client.get("/users/bob")).json()["friend_count"] == 0


async def test_unknown_user_is_404(h: Harness) -> None:
    await h.user("alice")
    for handle in ("nobody", "ALICE", "a", "x" * 200):
        assert_error(await h.client.get(f"/users/{handle}"), 404)
