"""Every error the contract lists, on every strategy: the status code, the one JSON error shape
`{"error": {"code", "message"}}`, and that a refused write leaves the database as it was.

The small helpers here (`assert_error`, `snapshot`) are shared by the other test_api_* files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId

from app import cursors
from app.api.endpoint import Endpoint
from app.api.openapi import ENDPOINTS as DOCUMENTED
from app.api.parsing import MAX_BODY_BYTES
from app.api.routes import ENDPOINTS
from app.api.schemas import MAX_TEXT_CHARS
from app.limits.ratelimit import COLLECTION as RATE_LIMITS_COLLECTION
from app.storage import db
from app.storage.embedded import EmbeddedServer
from tests import harness
from tests.harness import Harness

JSON = {"content-type": "application/json"}
# The client-side operation timeout in the outage test: long enough for a healthy request.
OUTAGE_TIMEOUT_MS = 2_000


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """`r` is the contract's JSON error with `status` (and `code`, if given); returns the error."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, str] = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return error


async def snapshot(h: Harness) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection of the test's database, in `_id` order: an in-place
    update shows as well as an insert or a delete."""
    db = h.ctx.database.db
    # Not the rate limit counters: a refused request is counted too (app.limits.ratelimit).
    names = sorted(set(await db.list_collection_names()) - {RATE_LIMITS_COLLECTION})
    return {name: await db[name].find().sort("_id", 1).to_list() for name in names}


def concrete_path(ep: Endpoint, handle: str, status_id: str) -> str:
    return ep.path.replace("{handle}", handle).replace("{id}", status_id)


VALID_BODIES: dict[str, dict[str, Any]] = {
    "/users": {"handle": "carol"},
    "/friend-requests": {"to": "bob"},
    "/statuses": {"text": "hello"},
    "/markers": {"home": {"last_read_id": "0" * 24}},
}


async def alice_and_bob(h: Harness) -> str:
    """Two users and one status of alice's; returns its id."""
    await h.user("alice")
    await h.user("bob")
    return str((await h.post("alice", "a status"))["id"])


# -- bodies ------------------------------------------------------------------------------------

WRITES: list[tuple[str, str | None]] = [
    ("/users", None),
    ("/friend-requests", "alice"),
    ("/statuses", "alice"),
]


async def test_malformed_json_is_400_and_writes_nothing(h: Harness) -> None:
    await alice_and_bob(h)
    before = await snapshot(h)
    for path, caller in WRITES:
        auth = h.auth(caller) if caller else {}
        for raw in (b'{"handle": "x"', b"{'text': 'x'}", b"", b"\xff\xfe{", b"[1,]", b"NaN-ish"):
            r = await h.client.post(path, content=raw, headers={**JSON, **auth})
            assert_error(r, 400, "malformed_json")
    assert await snapshot(h) == before


async def test_wrong_types_non_objects_and_unknown_fields_are_422(h: Harness) -> None:
    await alice_and_bob(h)
    before = await snapshot(h)
    bad: dict[str, list[Any]] = {
        "/users": [
            {"handle": 123},
            {"handle": {"$gt": ""}},
            {"handle": ["alice"]},
            {"handle": None},
            {},
            {"handle": "carol", "display_name": 5},
            {"handle": "carol", "admin": True},
            {"handle": "carol", "token": "mine"},
        ],
        "/friend-requests": [
            {"to": 1},
            {"to": {"$ne": None}},
            {"to": None},
            {},
            {"to": "bob", "status": "accepted"},
        ],
        "/statuses": [
            {"text": 42},
            {"text": ["a"]},
            {"text": {"$gt": ""}},
            {"text": True},
            {},
            {"text": "x", "author": "bob"},
            {"text": "x", "_id": "000000000000000000000000"},
        ],
    }
    non_objects = [b"[]", b'["text"]', b'"text"', b"1", b"null", b"true"]
    for path, caller in WRITES:
        auth = h.auth(caller) if caller else {}
        for body in bad[path]:
            r = await h.client.post(path, json=body, headers=auth)
            assert_error(r, 422)
        for raw in non_objects:
            r = await h.client.post(path, content=raw, headers={**JSON, **auth})
            assert_error(r, 422, "validation_failed")
    assert await snapshot(h) == before


async def test_text_length_bounds(h: Harness) -> None:
    await h.user("alice")
    before = await snapshot(h)
    for text in ("", "x" * (MAX_TEXT_CHARS + 1), "é" * (MAX_TEXT_CHARS + 1)):
        r = await h.client.post("/statuses", json={"text": text}, headers=h.auth("alice"))
        assert_error(r, 422, "validation_failed")
    assert await snapshot(h) == before
    # The limit counts characters, not bytes: 5,000 four-byte characters are fine.
    longest = await h.post("alice", "😀" * MAX_TEXT_CHARS)
    assert longest["text"] == "😀" * MAX_TEXT_CHARS


async def test_body_over_the_limit_is_413_with_or_without_content_length(h: Harness) -> None:
    await h.user("alice")
    before = await snapshot(h)
    big = b'{"text": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = await h.client.post("/statuses", content=big, headers={**JSON, **h.auth("alice")})
    assert_error(r, 413, "payload_too_large")

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold while the body streams in.
        yield b'{"text": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"x" * 4096
        yield b'"}'

    r = await h.client.post("/statuses", content=chunked(), headers={**JSON, **h.auth("alice")})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")
    r = await h.client.post("/users", content=big, headers=JSON)
    assert_error(r, 413, "payload_too_large")
    assert await snapshot(h) == before


async def test_wrong_content_type_is_415(h: Harness) -> None:
    await h.user("alice")
    before = await snapshot(h)
    body = b'{"text": "hello"}'
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        headers = {**h.auth("alice"), **({"content-type": ctype} if ctype else {})}
        r = await h.client.post("/statuses", content=body, headers=headers)
        assert_error(r, 415, "unsupported_media_type")
    r = await h.client.post("/users", data={"handle": "carol"})
    assert_error(r, 415, "unsupported_media_type")
    assert await snapshot(h) == before
    # Parameters of the media type are fine.
    r = await h.client.post(
        "/statuses",
        content=body,
        headers={**h.auth("alice"), "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201, r.text


# -- authentication ----------------------------------------------------------------------------


async def test_every_authenticated_endpoint_refuses_missing_or_bad_tokens(h: Harness) -> None:
    status_id = await alice_and_bob(h)
    token = h.tokens["alice"]
    bad_headers: list[tuple[dict[str, str], str]] = [
        ({}, "missing_token"),
        ({"Authorization": ""}, "missing_token"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": f"Bearer {token}x"}, "invalid_token"),
        ({"Authorization": f"Basic {token}"}, "invalid_token"),
        ({"Authorization": token}, "invalid_token"),
        ({"Authorization": "Bearer"}, "invalid_token"),
        ({"Authorization": "Bearer    "}, "invalid_token"),
        ({"Authorization": "Bearer " + "a" * 10_000}, "invalid_token"),
    ]
    authenticated = [ep for ep in ENDPOINTS if ep.auth]
    assert len(authenticated) >= 10
    before = await snapshot(h)
    for ep in authenticated:
        path = concrete_path(ep, "bob", status_id)
        body = VALID_BODIES.get(ep.path) if ep.body is not None else None
        for headers, code in bad_headers:
            r = await h.client.request(ep.method, path, json=body, headers=headers)
            assert_error(r, 401, code)
            assert r.headers["www-authenticate"] == "Bearer"
    assert await snapshot(h) == before
    # The scheme is case-insensitive (RFC 9110), and the real token works everywhere.
    r = await h.client.get("/me", headers={"Authorization": f"bearer {token}"})
    assert r.status_code == 200 and r.json()["handle"] == "alice"


# -- query parameters --------------------------------------------------------------------------


def garbage_cursors() -> list[str]:
    import base64

    def b64(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    return [
        "garbage",
        "!!!",
        "%00",
        "a",
        b64("v1:not-an-object-id"),
        b64("v2:000000000000000000000000"),
        b64(str(ObjectId())),  # an id without the version tag
        "000000000000000000000000",
        cursors.encode(ObjectId()) + "!",
    ]


async def test_garbage_cursors_are_400(h: Harness) -> None:
    await h.user("alice")
    places = [
        ("/timeline", "before"),
        ("/timeline", "after"),
        ("/friends", "cursor"),
        ("/users/alice/statuses", "before"),
    ]
    for path, param in places:
        for cursor in garbage_cursors():
            r = await h.client.get(path, params={param: cursor}, headers=h.auth("alice"))
            assert_error(r, 400, "invalid_cursor")
    # A well-formed cursor that matches nothing is simply an empty page.
    r = await h.client.get(
        "/timeline", params={"before": cursors.encode(ObjectId())}, headers=h.auth("alice")
    )
    assert r.status_code == 200 and r.json()["items"] == []


async def test_before_and_after_together_are_400(h: Harness) -> None:
    await h.user("alice")
    c = cursors.encode(ObjectId())
    r = await h.client.get("/timeline", params={"before": c, "after": c}, headers=h.auth("alice"))
    assert_error(r, 400, "invalid_cursor")


async def test_out_of_range_or_non_numeric_limits_are_400(h: Harness) -> None:
    await h.user("alice")
    for path in ("/timeline", "/friends", "/users/alice/statuses"):
        for limit in ("0", "101", "-1", "abc", "1.5", "", " 5", "1e2", "٣", "99999999999999999999"):
            r = await h.client.get(path, params={"limit": limit}, headers=h.auth("alice"))
            assert_error(r, 400, "invalid_limit")
        for limit in ("1", "100"):
            r = await h.client.get(path, params={"limit": limit}, headers=h.auth("alice"))
            assert r.status_code == 200, (path, limit, r.text)


async def test_idempotency_key_length_is_checked(h: Harness) -> None:
    await h.user("alice")
    before = await snapshot(h)
    for key in ("", "k" * 256):
        r = await h.client.post(
            "/statuses",
            json={"text": "x"},
            headers={**h.auth("alice"), "Idempotency-Key": key},
        )
        assert_error(r, 400, "invalid_idempotency_key")
    assert await snapshot(h) == before
    await h.post("alice", "x", **{"Idempotency-Key": "k" * 255})


# -- routing -----------------------------------------------------------------------------------


async def test_unknown_route_is_404_json(h: Harness) -> None:
    for path in ("/nope", "/users/alice/nope", "/timeline/x"):
        for method in ("GET", "POST", "DELETE"):
            assert_error(await h.client.request(method, path), 404, "not_found")
    # `/` and `/static/` are the web client's (GET only): a missing asset is the JSON 404,
    # another method the JSON 405.
    assert_error(await h.client.get("/static/nope.js"), 404, "not_found")
    for path in ("/", "/static/app.js"):
        assert_error(await h.client.request("POST", path), 405, "method_not_allowed")


async def test_wrong_method_is_405_json_with_allow(h: Harness) -> None:
    await h.user("alice")
    cases = [
        ("PUT", "/users", {"POST"}),
        ("DELETE", "/timeline", {"GET"}),
        ("PATCH", "/statuses/000000000000000000000000", {"GET", "DELETE"}),
        ("POST", "/health", {"GET"}),
        ("PUT", "/friends/alice", {"DELETE"}),
    ]
    for method, path, allowed in cases:
        r = await h.client.request(method, path, headers=h.auth("alice"))
        assert_error(r, 405, "method_not_allowed")
        allow = {m.strip() for m in r.headers.get("allow", "").split(",")} - {"HEAD", ""}
        assert allow == allowed, (method, path, r.headers.get("allow"))


# -- the database ------------------------------------------------------------------------------


async def test_database_outage_is_503_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database of its own (this test kills it); the strategy plays no part in the 503."""
    # Under PyMongo's client-side timeout every operation retries until timeoutMS runs out
    # (OPERATION_TIMEOUT_MS, 15 s); a shorter one keeps this test quick and changes nothing else.
    make_client = db.make_client
    monkeypatch.setattr(
        db, "make_client", lambda url: make_client(url, timeout_ms=OUTAGE_TIMEOUT_MS)
    )
    # sync_on_commit: what was acknowledged before the kill must be there after the restart.
    server = EmbeddedServer(tmp_path / "db", sync_on_commit=True).start()
    try:
        async with harness.running(harness.test_settings(server.url, "fanout_on_read")) as h:
            await h.user("alice")
            server.kill()
            health, read, write = await asyncio.gather(
                h.client.get("/health"),
                h.client.get("/users/alice"),
                h.client.post("/statuses", json={"text": "lost?"}, headers=h.auth("alice")),
            )
            for r in (health, read, write):
                assert_error(r, 503, "database_unavailable")
            # Back on the same port and files: the service recovers without a restart.
            server = EmbeddedServer(tmp_path / "db", port=server.port, sync_on_commit=True)
            server.start()
            assert (await h.client.get("/health")).status_code == 200
            me = await h.client.get("/me", headers=h.auth("alice"))
            assert me.status_code == 200, me.text
            assert (await snapshot(h))["statuses"] == []
    finally:
        server.kill()


# -- the OpenAPI document ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_openapi_lists_every_route_and_its_errors(h: Harness) -> None:
    r = await h.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert documented == {(ep.method, ep.path) for ep in DOCUMENTED}
    schemas = doc["components"]["schemas"]
    for ep in DOCUMENTED:
        op = paths[ep.path][ep.method.lower()]
        responses = op["responses"]
        assert str(ep.ok) in responses, (ep.method, ep.path)
        expected_errors = {*ep.errors, 503} | ({401} if ep.auth else set())
        assert {int(c) for c in responses if int(c) >= 400} >= expected_errors
        for code, response in responses.items():
            if int(code) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[-1] in schemas
        if ep.auth:
            assert op["security"] == [{"bearer": []}]
        if ep.body is not None:
            assert "application/json" in op["requestBody"]["content"]
