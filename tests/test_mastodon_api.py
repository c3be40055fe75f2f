"""The Mastodon client API in-process: its paging against the native timeline on every strategy
(the TIMELINE_MAX window included), and bad input: the documented error in Mastodon's shape,
never a 500, nothing written."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.domain.passwords import hash_password
from tests import harness
from tests.harness import Harness

MAX = 30  # TIMELINE_MAX for the paging test: fewer than the statuses, so the window counts
FORM = {"content-type": "application/x-www-form-urlencoded"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def home(h: Harness, handle: str, **params: Any) -> tuple[list[str], str | None]:
    r = await h.client.get("/api/v1/timelines/home", params=params, headers=h.auth(handle))
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()], r.headers.get("link")


@pytest.mark.parametrize("timeline_max", [MAX])
async def test_paging_is_the_native_timeline(h: Harness) -> None:
    for u in ("ann", "ben", "cyd"):
        await h.user(u)
    await h.befriend("ann", "ben")
    await h.befriend("ann", "cyd")  # ann has two friends: large under the tests' hybrid threshold
    oldest = (await h.post("ben", "the oldest"))["id"]
    for i in range(59):
        await h.post(("ann", "ben", "cyd")[i % 3], f"status {i}")
    await h.drain()
    expected = await h.timeline_ids("ben")
    assert len(expected) == MAX and oldest not in expected

    # Walking `next` links to the end gives the whole window once, in order.
    walked: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        page, link = await home(h, "ben", **params)
        if not page:
            assert link is None  # no header on an empty page
            break
        assert link is not None
        nxt, prev = re.findall(r"<([^>]+)>; rel=\"(next|prev)\"", link)
        assert nxt[1] == "next" and prev[1] == "prev"  # next first
        assert f"max_id={page[-1]}" in nxt[0] and f"min_id={page[0]}" in prev[0]
        assert "limit=7" in nxt[0] and "limit=7" in prev[0]
        walked += page
        params = {"limit": 7, "max_id": page[-1]}
    assert walked == expected

    for i in (0, 1, 4, 12, MAX - 1):
        anchor = expected[i]
        assert (await home(h, "ben", min_id=anchor, limit=5))[0] == expected[max(0, i - 5) : i]
        assert (await home(h, "ben", since_id=anchor, limit=5))[0] == expected[: min(5, i)]
        assert (await home(h, "ben", max_id=anchor, limit=5))[0] == expected[i + 1 : i + 6]
    # Below the window: min_id gives the window's oldest, never a status beyond it.
    assert (await home(h, "ben", min_id=oldest, limit=5))[0] == expected[-5:]
    assert (await home(h, "ben", min_id="0" * 24, limit=40))[0] == expected
    assert (await home(h, "ben", remote="true"))[0] == []


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_bad_input_is_refused_in_mastodons_shape(h: Harness) -> None:
    c = h.client
    await h.user("ann")
    await h.user("ben")
    await h.befriend("ann", "ben")
    app = (
        await c.post(
            "/api/v1/apps",
            data={
                "client_name": "t",
                "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
                "scopes": "read write",
            },
        )
    ).json()
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}

    async def token(**form: str) -> Any:
        return await c.post("/oauth/token", data={**creds, **form})

    app_token = (await token(grant_type="client_credentials", scope="write")).json()["access_token"]
    reg = {
        "username": "zed",
        "email": "Zed@Example.org",
        "password": "long enough",
        "agreement": "1",
    }
    r = await c.post("/api/v1/accounts", data=reg, headers=bearer(app_token))
    assert r.status_code == 200 and r.json()["scope"] == "write"
    users = h.ctx.store.users
    doc = await users.find_one({"handle": "zed"})
    assert doc["email"] == "zed@example.org" and doc["password_hash"].startswith(
        "scrypt$16384$8$5$"
    )
    assert "long enough" not in str(doc)

    # Registration refusals: 422 with Mastodon's per-field details; nothing written.
    for field, value, error in (
        ("username", "zed", "ERR_TAKEN"),
        ("email", "ZED@example.org", "ERR_TAKEN"),
        ("username", "Not Valid", "ERR_INVALID"),
        ("email", "no-at-sign", "ERR_INVALID"),
        ("password", "short", "ERR_TOO_SHORT"),
        ("agreement", "0", "ERR_ACCEPTED"),
    ):
        body = {**reg, "username": "yan", "email": "yan@example.org", field: value}
        r = await c.post("/api/v1/accounts", data=body, headers=bearer(app_token))
        assert r.status_code == 422, (field, r.text)
        assert r.json()["details"][field][0]["error"] == error
    assert await users.count_documents({}) == 3
    r = await c.post("/api/v1/accounts", data=reg)
    assert r.status_code == 401 and "error" in r.json()

    # Sign-in: a wrong password is 400 invalid_grant, an unknown app 401, a bad scope 400.
    good = {"grant_type": "password", "username": "zed@example.org", "password": "long enough"}
    tokens = h.ctx.store.access_tokens
    before = await tokens.count_documents({})
    r = await token(**{**good, "password": "wrong password"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await c.post("/oauth/token", data={**good, "client_id": "nope", "client_secret": "x"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await token(**good, scope="read admin:all")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await token(**good, scope="follow")  # not registered by the application
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await token(grant_type="authorization_code", code="x")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await c.post(
        "/api/v1/apps", data={"client_name": "t", "redirect_uris": "x:y", "scopes": "root"}
    )
    assert r.status_code == 400 and r.json() == {"error": "unknown scope 'root'"}
    assert await tokens.count_documents({}) == before

    # A read-only token may not post (403), and nothing is written.
    read_only = (await token(**good, scope="read")).json()["access_token"]
    statuses = h.ctx.store.statuses
    r = await c.post("/api/v1/statuses", data={"status": "x"}, headers=bearer(read_only))
    assert r.status_code == 403 and r.json() == {
        "error": "This action is outside the authorized scopes"
    }
    assert await statuses.count_documents({}) == 0
    # On the native API too: reads need `read`, changes `write`.
    r = await c.post("/statuses", json={"text": "x"}, headers=bearer(read_only))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert await statuses.count_documents({}) == 0
    assert (await c.get("/timeline", headers=bearer(read_only))).status_code == 200
    # An application's token is no user's.
    r = await c.get("/api/v1/accounts/verify_credentials", headers=bearer(app_token))
    assert r.status_code == 401

    # Revoked: 401 on both APIs; revoking needs the application's credentials.
    r = await c.post(
        "/oauth/revoke", data={"client_id": "nope", "client_secret": "x", "token": read_only}
    )
    assert r.status_code == 403
    assert (await c.get("/me", headers=bearer(read_only))).status_code == 200
    r = await c.post("/oauth/revoke", data={**creds, "token": read_only})
    assert r.status_code == 200 and r.json() == {}
    assert (await c.get("/me", headers=bearer(read_only))).status_code == 401
    r = await c.get("/api/v1/accounts/verify_credentials", headers=bearer(read_only))
    assert r.status_code == 401 and r.json() == {"error": "the bearer token is invalid"}

    # Statuses: unsupported fields are refused, never dropped; another user's DELETE is 404.
    ann = h.auth("ann")
    for extra in (
        {"media_ids[]": "1"},
        {"visibility": "public"},
        {"spoiler_text": "cw"},
        {"in_reply_to_id": "1"},
        {"sensitive": "true"},
        {"scheduled_at": "2030-01-01T00:00:00Z"},
        {"unknown_field": "x"},
        {"status": ""},
    ):
        r = await c.post("/api/v1/statuses", data={"status": "x", **extra}, headers=ann)
        assert r.status_code == 422, (extra, r.text)
        assert isinstance(r.json()["error"], str)
    r = await c.post(
        "/api/v1/statuses", json={"status": "x", "poll": {"options": ["a"]}}, headers=ann
    )
    assert r.status_code == 422
    r = await c.post(
        "/api/v1/statuses",
        content=b"--b\r\n",
        headers={**ann, "content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 415
    r = await c.post("/api/v1/statuses", data={"status": "x" * 70_000}, headers=ann)
    assert r.status_code == 413 and "error" in r.json()
    r = await c.post(
        "/api/v1/statuses", content=b"{", headers={**ann, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert await statuses.count_documents({}) == 0
    r = await c.post("/api/v1/statuses", json={"status": "mine", "media_ids": []}, headers=ann)
    assert r.status_code == 200, r.text
    mine = r.json()["id"]
    r = await c.delete(f"/api/v1/statuses/{mine}", headers=h.auth("ben"))
    assert r.status_code == 404 and r.json() == {"error": "no such status"}
    assert await statuses.count_documents({}) == 1
    r = await c.post(
        "/api/v1/statuses", data={"status": "a"}, headers={**ann, "Idempotency-Key": "k"}
    )
    r = await c.post(
        "/api/v1/statuses", data={"status": "b"}, headers={**ann, "Idempotency-Key": "k"}
    )
    assert r.status_code == 422
    assert await statuses.count_documents({}) == 2

    # Query parameters and ids.
    for params, status in (
        ({"limit": "abc"}, 400),
        ({"limit": "0"}, 400),
        ({"limit": "-3"}, 400),
        ({"limit": "9" * 5000}, 200),
        ({"max_id": "xyz"}, 400),
        ({"min_id": "g" * 24}, 400),
    ):
        r = await c.get("/api/v1/timelines/home", params=params, headers=ann)
        assert r.status_code == status, (params, r.text)
    r = await c.get("/api/v1/timelines/home", params={"limit": "1000"}, headers=ann)
    assert r.status_code == 200 and len(r.json()) == 2  # accepted, served as at most 40
    for path, message in (
        ("/api/v1/statuses/xyz", "no such status"),
        ("/api/v1/accounts/xyz", "Record not found"),
        ("/api/v1/accounts/" + "f" * 24, "Record not found"),
    ):
        r = await c.get(path, headers=ann)
        assert r.status_code == 404 and r.json() == {"error": message}
    r = await c.get(
        "/api/v1/accounts/relationships", params={"id[]": ["bad", "0" * 24]}, headers=ann
    )
    assert r.status_code == 200 and r.json() == []
    r = await c.post("/api/v1/markers", json={"home": {"last_read_id": "nope"}}, headers=ann)
    assert r.status_code == 422
    r = await c.post("/api/v1/markers", json={"notifications": {"last_read_id": mine}}, headers=ann)
    assert r.status_code == 422
    assert await h.ctx.store.markers.count_documents({}) == 0
    r = await c.get("/api/v1/notifications", headers=ann)
    assert r.status_code == 404 and r.json() == {"error": "Record not found"}
    r = await c.put("/api/v1/timelines/home", headers=ann)
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = await c.get("/api/v1/instance/")
    assert r.status_code == 200 and r.json()["uri"] == "test"
    me = (await c.get("/api/v1/accounts/verify_credentials", headers=ann)).json()
    assert (me["followers_count"], me["following_count"], me["statuses_count"]) == (1, 1, 2)
    assert me["source"]["privacy"] == "private" and me["locked"] is True
    avatar = await c.get(me["avatar"].removeprefix("http://test"))
    assert avatar.status_code == 200 and avatar.headers["content-type"] == "image/png"
    assert avatar.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_every_authenticated_endpoint_refuses_bad_tokens(h: Harness) -> None:
    from app.api.mastodon.routes import MASTODON_ENDPOINTS

    await h.user("ann")
    before = await h.ctx.store.statuses.count_documents({})
    authenticated = [ep for ep in MASTODON_ENDPOINTS if ep.auth]
    assert len(authenticated) >= 15
    for ep in authenticated:
        path = ep.path.replace("{id}", "0" * 24)
        for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic x"}):
            r = await h.client.request(ep.method, path, headers=headers)
            assert r.status_code == 401, (ep.method, ep.path, r.text)
            assert isinstance(r.json()["error"], str) and "www-authenticate" in r.headers
    assert await h.ctx.store.statuses.count_documents({}) == before


# The failed-login rule in the next test: small, so that a few failures reach it.
FAILED_LOGINS = 3


async def test_failed_logins_are_limited_per_account_and_address(mongo_url: str) -> None:
    settings = harness.test_settings(
        mongo_url,
        "receiver_copies",
        rate_limits=f"{harness.TEST_RATE_LIMITS},failed_login={FAILED_LOGINS}/1h",
        trusted_proxy_hops=1,  # so that the test can speak from several addresses
    )
    async with harness.running(settings) as h:
        await _failed_logins_are_limited(h)


async def _failed_logins_are_limited(h: Harness) -> None:
    c = h.client
    app = (
        await c.post(
            "/api/v1/apps", data={"client_name": "t", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob"}
        )
    ).json()
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    app_token = (
        await c.post(
            "/oauth/token", data={**creds, "grant_type": "client_credentials", "scope": "read"}
        )
    ).json()
    assert app_token["scope"] == "read"
    # Registration needs write:accounts: a read-only application token is refused.
    r = await c.post(
        "/api/v1/accounts",
        data={"username": "x_y", "email": "x@y.z", "password": "long enough", "agreement": "1"},
        headers=bearer(app_token["access_token"]),
    )
    assert r.status_code == 403
    await h.user("ann")  # no password: a password login fails like a wrong one
    attempt = {**creds, "grant_type": "password", "username": "ann", "password": "guess guess"}

    def at(n: int) -> dict[str, str]:
        return {"x-forwarded-for": f"192.0.2.{n}"}

    # ann's password guessed from three addresses: the account reaches its limit.
    for n in range(FAILED_LOGINS):
        r = await c.post("/oauth/token", data=attempt, headers=at(n))
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # Over the limit: refused before the password is tried, the right one included (from a
    # fourth address too), in Mastodon's OAuth shape, with the headers of every rate limit.
    right = "the right password"
    await h.ctx.store.users.update_one(
        {"handle": "ann"}, {"$set": {"password_hash": await hash_password(right)}}
    )
    r = await c.post("/oauth/token", data={**attempt, "password": right}, headers=at(9))
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert r.json()["error"] == "rate_limited" and "x-ratelimit-limit" in r.headers
    # One address guessing across accounts reaches the address limit.
    for n in range(FAILED_LOGINS):
        r = await c.post("/oauth/token", data={**attempt, "username": f"nobody{n}"}, headers=at(50))
        assert r.status_code == 400
    r = await c.post("/oauth/token", data={**attempt, "username": "ben"}, headers=at(50))
    assert r.status_code == 429
    # Another account from another address is not locked out by either.
    r = await c.post("/oauth/token", data={**attempt, "username": "ben"}, headers=at(51))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
