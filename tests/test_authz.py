"""The authorization matrix: every endpoint × {no token, invalid token, another user (a
non-friend), a friend, the owner}, with the contract's status codes, and checks that nothing
private leaks: a non-friend's status answers exactly like an id that does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from app.api.routes import ENDPOINTS
from tests import harness
from tests.harness import Harness

CALLERS = ("none", "invalid", "other", "friend", "owner")
# Bearer headers that must all be refused with 401 (and the same error body shape).
INVALID_AUTH = (
    "Bearer not-a-real-token",
    "Bearer ",
    "Bearer",
    "Basic YWxpY2U6c2VjcmV0",
    "Bearer " + "x" * 600,
    "Token abc",
    "Bearer {'$ne': null}",
    "Bearer \t",
)
UNKNOWN_ID = "0123456789abcdef01234567"


def same_headers(r: httpx.Response) -> dict[str, str]:
    per_request = {"date", "x-ratelimit-remaining", "x-ratelimit-reset"}
    return {k: v for k, v in r.headers.items() if k not in per_request}


@dataclass
class World:
    """alice (the owner), bob (alice's friend), carol (no relation), dave (asked alice to be
    friends, still pending). `status` is alice's status, `bobs` is bob's."""

    h: Harness
    status: str
    bobs: str

    def headers(self, who: str) -> dict[str, str]:
        if who == "none":
            return {}
        if who == "invalid":
            return {"Authorization": INVALID_AUTH[0]}
        return self.h.auth({"other": "carol", "friend": "bob", "owner": "alice"}[who])


async def build_world(h: Harness) -> World:
    for name in ("alice", "bob", "carol", "dave"):
        await h.user(name)
    await h.befriend("alice", "bob")
    r = await h.client.post("/friend-requests", json={"to": "alice"}, headers=h.auth("dave"))
    assert r.status_code == 201, r.text
    status = (await h.post("alice", "alice's private words"))["id"]
    bobs = (await h.post("bob", "bob's words"))["id"]
    await h.drain()
    return World(h, status, bobs)


@pytest.fixture
async def world(mongo_url: str) -> AsyncIterator[World]:
    # Authorization does not depend on the strategy; the leak tests below run on all of them.
    async with harness.running(harness.test_settings(mongo_url, "receiver_copies")) as h:
        yield await build_world(h)


Call = Callable[[World, str], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    call: Call
    # Expected status per caller, in CALLERS order.
    expect: tuple[int, int, int, int, int]


def _get(path: str) -> Call:
    async def call(w: World, who: str) -> httpx.Response:
        return await w.h.client.get(path.format(s=w.status), headers=w.headers(who))

    return call


def _delete(path: str) -> Call:
    async def call(w: World, who: str) -> httpx.Response:
        return await w.h.client.delete(path.format(s=w.status), headers=w.headers(who))

    return call


def _post(path: str, body: dict[str, object] | None = None) -> Call:
    async def call(w: World, who: str) -> httpx.Response:
        return await w.h.client.post(path, json=body, headers=w.headers(who))

    return call


async def _create_user(w: World, who: str) -> httpx.Response:
    # No authentication needed; a bad or foreign token is ignored, not an error.
    return await w.h.client.post("/users", json={"handle": f"new_{who}"}, headers=w.headers(who))


async def _post_status(w: World, who: str) -> httpx.Response:
    return await w.h.client.post("/statuses", json={"text": "hi"}, headers=w.headers(who))


# Callers: none, invalid, other (carol), friend (bob), owner (alice). Order matters where a call
# changes state: the owner goes last.
MATRIX: tuple[Case, ...] = (
    Case("POST", "/users", _create_user, (201, 201, 201, 201, 201)),
    Case("GET", "/users/{handle}", _get("/users/alice"), (200, 200, 200, 200, 200)),
    Case("GET", "/me", _get("/me"), (401, 401, 200, 200, 200)),
    # To alice: carol's is new (201), bob is already a friend (200), alice herself (422).
    Case(
        "POST",
        "/friend-requests",
        _post("/friend-requests", {"to": "alice"}),
        (
            401,
            401,
            201,
            200,
            422,
        ),
    ),
    Case("GET", "/friend-requests", _get("/friend-requests"), (401, 401, 200, 200, 200)),
    # dave's request went to alice: nobody else can accept it.
    Case(
        "POST",
        "/friend-requests/{handle}/accept",
        _post("/friend-requests/dave/accept"),
        (
            401,
            401,
            404,
            404,
            200,
        ),
    ),
    # Declining/cancelling only ever touches the caller's own requests (checked below).
    Case(
        "DELETE",
        "/friend-requests/{handle}",
        _delete("/friend-requests/dave"),
        (
            401,
            401,
            204,
            204,
            204,
        ),
    ),
    Case("GET", "/friends", _get("/friends"), (401, 401, 200, 200, 200)),
    Case("DELETE", "/friends/{handle}", _delete("/friends/bob"), (401, 401, 204, 204, 204)),
    Case("POST", "/statuses", _post_status, (401, 401, 201, 201, 201)),
    Case("GET", "/statuses/{id}", _get("/statuses/{s}"), (401, 401, 404, 200, 200)),
    Case("DELETE", "/statuses/{id}", _delete("/statuses/{s}"), (401, 401, 404, 404, 204)),
    Case(
        "GET",
        "/users/{handle}/statuses",
        _get("/users/alice/statuses"),
        (
            401,
            401,
            404,
            200,
            200,
        ),
    ),
    Case("GET", "/timeline", _get("/timeline"), (401, 401, 200, 200, 200)),
    # Markers and the unread count are the caller's own: no one else's to reach.
    Case(
        "GET", "/timeline/unread_count", _get("/timeline/unread_count"), (401, 401, 200, 200, 200)
    ),
    Case("GET", "/markers", _get("/markers"), (401, 401, 200, 200, 200)),
    Case(
        "POST",
        "/markers",
        _post("/markers", {"home": {"last_read_id": UNKNOWN_ID}}),
        (401, 401, 200, 200, 200),
    ),
    Case("GET", "/health", _get("/health"), (200, 200, 200, 200, 200)),
)


def test_matrix_covers_every_endpoint() -> None:
    assert {(c.method, c.path) for c in MATRIX} == {(e.method, e.path) for e in ENDPOINTS}


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: f"{c.method} {c.path}")
async def test_authorization_matrix(world: World, case: Case) -> None:
    seen = {}
    for who in CALLERS:
        r = await case.call(world, who)
        seen[who] = r.status_code
        if r.status_code >= 400:
            error = r.json()["error"]
            assert set(error) == {"code", "message"}
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"
            # A 401 says nothing about the resource it was aimed at.
            assert r.json()["error"]["code"] in ("missing_token", "invalid_token")
        # Private text reaches only alice and her friend.
        if who in ("none", "invalid", "other"):
            assert "alice's private words" not in r.text
    assert seen == dict(zip(CALLERS, case.expect, strict=True))


async def test_every_malformed_token_is_refused(world: World) -> None:
    bodies = set()
    for value in INVALID_AUTH:
        r = await world.h.client.get("/me", headers={"Authorization": value})
        assert r.status_code == 401, value
        bodies.add(r.json()["error"]["code"])
    assert bodies <= {"missing_token", "invalid_token"}
    # The scheme is case-insensitive (RFC 7235); the token is not.
    token = world.h.tokens["alice"]
    assert (
        await world.h.client.get("/me", headers={"Authorization": f"bearer {token}"})
    ).is_success
    swapped = token.swapcase()
    r = await world.h.client.get("/me", headers={"Authorization": f"Bearer {swapped}"})
    assert r.status_code == 401


async def test_no_one_touches_anothers_requests_or_friendships(world: World) -> None:
    h = world.h
    # carol and bob "decline" dave's request and "unfriend" alice's friends: nothing happens.
    for who in ("carol", "bob"):
        r = await h.client.delete("/friend-requests/dave", headers=h.auth(who))
        assert r.status_code == 204
        r = await h.client.post("/friend-requests/dave/accept", headers=h.auth(who))
        assert r.status_code == 404
    r = await h.client.delete("/friends/alice", headers=h.auth("carol"))
    assert r.status_code == 204
    incoming = (await h.client.get("/friend-requests", headers=h.auth("alice"))).json()
    assert [i["from"] for i in incoming["incoming"]] == ["dave"]
    friends = (await h.client.get("/friends", headers=h.auth("alice"))).json()
    assert [f["handle"] for f in friends["items"]] == ["bob"]


async def test_a_private_id_answers_like_an_unknown_one(world: World) -> None:
    h = world.h
    unknown_get = await h.client.get(f"/statuses/{UNKNOWN_ID}", headers=h.auth("carol"))
    unknown_delete = await h.client.delete(f"/statuses/{UNKNOWN_ID}", headers=h.auth("carol"))
    assert unknown_get.status_code == unknown_delete.status_code == 404
    for path in (f"/statuses/{world.status}", "/statuses/not-an-id"):
        r = await h.client.get(path, headers=h.auth("carol"))
        assert (r.status_code, r.content) == (404, unknown_get.content)
        # All but the caller's own rate limit counter, which moves with every request.
        assert same_headers(r) == same_headers(unknown_get)
    # Deleting someone else's status, visible (bob's friend alice) or not (carol): same 404.
    for who in ("carol", "alice"):
        r = await h.client.delete(f"/statuses/{world.bobs}", headers=h.auth(who))
        assert (r.status_code, r.content) == (404, unknown_delete.content)
    # A deleted status is as unknown as one that never existed, for its former readers too.
    await h.delete("alice", world.status)
    for who in ("alice", "bob"):
        r = await h.client.get(f"/statuses/{world.status}", headers=h.auth(who))
        assert (r.status_code, r.content) == (404, unknown_get.content)


async def test_nothing_of_a_non_friend_leaks(h: Harness) -> None:
    """On every strategy: a non-friend, and a former friend after unfriending, sees none of
    alice's statuses anywhere (timeline, her statuses, by id)."""
    w = await build_world(h)
    unknown = await h.client.get(f"/statuses/{UNKNOWN_ID}", headers=h.auth("carol"))
    await h.unfriend("alice", "bob")
    await h.drain()
    for who in ("carol", "bob"):
        r = await h.client.get(f"/statuses/{w.status}", headers=h.auth(who))
        assert (r.status_code, r.content) == (404, unknown.content)
        assert w.status not in await h.timeline_ids(who)
        r = await h.client.get("/users/alice/statuses", headers=h.auth(who))
        assert r.status_code == 404
        assert "alice's private words" not in r.text
    assert await h.timeline_ids("bob") == [w.bobs]
