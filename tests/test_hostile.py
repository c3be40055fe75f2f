"""Hostile input: operator injection, unicode edge cases, huge and deeply nested bodies, wrong
content types. Each must get a clear 4xx (never a 5xx) and write nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.api.parsing import MAX_BODY_BYTES
from app.api.schemas import MAX_TEXT_CHARS
from app.limits.ratelimit import COLLECTION as RATE_LIMITS_COLLECTION
from tests import harness
from tests.harness import Harness

INJECTIONS: tuple[Any, ...] = (
    {"$gt": ""},
    {"$ne": None},
    {"$regex": ".*"},
    {"$where": "sleep(1000)"},
    ["alice"],
    {"handle": "alice"},
    None,
    1,
    True,
)
# Strings that look like operators or paths: data, never query syntax.
OPERATOR_STRINGS = ("$gt", "$where", "a.b", "$", "{'$ne': null}", "$__proto__")


@pytest.fixture
async def hh(mongo_url: str) -> AsyncIterator[Harness]:
    async with harness.running(harness.test_settings(mongo_url, "receiver_copies")) as h:
        await h.user("alice")
        await h.user("bob")
        await h.post("alice", "an existing status")
        yield h


async def contents(h: Harness) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection, in `_id` order (not just how many: an in-place
    update must show too)."""
    db = h.ctx.database.db
    # Not the rate limit counters: a refused request is counted too (app.limits.ratelimit).
    names = sorted(set(await db.list_collection_names()) - {RATE_LIMITS_COLLECTION})
    return {name: await db[name].find().sort("_id", 1).to_list() for name in names}


def assert_clear_error(r: httpx.Response, *statuses: int) -> str:
    assert r.status_code in statuses, (r.status_code, r.text)
    error = r.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return str(error["code"])


async def test_operator_injection_in_json_fields(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    auth = h.auth("alice")
    for value in INJECTIONS:
        for body, path, headers in (
            ({"handle": value}, "/users", {}),
            ({"handle": "mallory", "display_name": value}, "/users", {}),
            ({"to": value}, "/friend-requests", auth),
            ({"text": value}, "/statuses", auth),
        ):
            if value is None and "display_name" in body:
                continue  # a null display_name is allowed (it is optional)
            r = await h.client.post(path, json=body, headers=headers)
            assert_clear_error(r, 422)
    # Operator keys beside valid fields, and whole bodies that are not objects.
    for body in (
        {"text": "x", "$set": {"author": "bob"}},
        {"text": "x", "author": "bob"},
        {"handle": "mallory", "token_hash": "0" * 64},
        [{"text": "x"}],
        "text",
        None,
    ):
        r = await h.client.post(
            "/statuses",
            content=json.dumps(body),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert_clear_error(r, 422)
    # Operator-looking strings are refused as handles by their pattern...
    for s in OPERATOR_STRINGS:
        assert_clear_error(await h.client.post("/users", json={"handle": s}), 422)
        assert_clear_error(
            await h.client.post("/friend-requests", json={"to": s}, headers=auth), 422
        )
    assert await contents(h) == before
    # ...and are plain data as text: stored and returned verbatim, matching nothing else.
    for s in OPERATOR_STRINGS:
        posted = await h.post("alice", s)
        r = await h.client.get(f"/statuses/{posted['id']}", headers=auth)
        assert r.json()["text"] == s


async def test_operator_injection_in_query_and_path(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    auth = h.auth("alice")
    for path in (
        "/timeline?limit[$gt]=0",
        "/timeline?limit=%7B%22%24gt%22%3A0%7D",
        '/timeline?before={"$ne":null}',
        '/timeline?after={"$gt":""}',
        "/timeline?before[$ne]=x",
        "/timeline?limit=1&limit=100",
        "/timeline?limit=-1",
        "/timeline?limit=1e2",
        "/timeline?limit=%EF%BC%91",  # a fullwidth digit one: isdigit() alone would accept it
        "/timeline?limit=%C2%B2",  # a superscript two
        "/timeline?limit=" + "1" * 5000,  # int() of this raises in CPython (4,300-digit cap)
        "/friends?cursor[$ne]=",
        '/friends?cursor={"$gt":""}',
        '/users/alice/statuses?before={"$ne":null}',
        "/users/alice/statuses?author=bob",
    ):
        r = await h.client.get(path, headers=auth)
        assert r.status_code == 400, (path, r.text)
        assert_clear_error(r, 400)
    for path in (
        '/users/{"$ne":null}',
        "/users/$gt",
        "/users/alice%00",
        '/statuses/{"$ne":null}',
        "/statuses/$where",
        '/users/{"$ne":null}/statuses',
    ):
        code = assert_clear_error(await h.client.get(path, headers=auth), 404)
        assert code.endswith("not_found")
    assert_clear_error(await h.client.post('/friend-requests/{"$gt":""}/accept', headers=auth), 404)
    assert_clear_error(await h.client.delete('/friends/{"$gt":""}', headers=auth), 404)
    assert_clear_error(await h.client.delete('/statuses/{"$gt":""}', headers=auth), 404)
    assert await contents(h) == before


UNICODE_TEXTS = (
    "\u202eRTL override\u202c and \u05e9\u05dc\u05d5\u05dd",  # RTL text and bidi controls
    "\U0001f469\u200d\U0001f469\u200d\U0001f467 family, \U0001f1eb\U0001f1f7 flag",  # ZWJ, flags
    "e\u0301\u0301\u0301 combining" + "\u0301" * 100,
    "zero\u200bwidth\ufeffbom",
    "tab\tnewline\nreturn\r",
    "nul\u0000inside",
    "\uffff\ufffe noncharacters",
    "\U0010ffff last code point",
)


async def test_unicode_edge_cases_round_trip(hh: Harness) -> None:
    h = hh
    for text in UNICODE_TEXTS:
        posted = await h.post("alice", text)
        assert posted["text"] == text
        r = await h.client.get(f"/statuses/{posted['id']}", headers=h.auth("alice"))
        assert r.json()["text"] == text
    # The limit counts characters (code points), not bytes: 5,000 four-byte characters fit,
    # sent as raw UTF-8 and as \\ud83d\\ude00 escapes (the largest valid body).
    big = "\U0001f600" * MAX_TEXT_CHARS
    for ensure_ascii in (False, True):
        body = json.dumps({"text": big}, ensure_ascii=ensure_ascii).encode()
        assert len(body) <= MAX_BODY_BYTES
        r = await h.client.post(
            "/statuses",
            content=body,
            headers={**h.auth("alice"), "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["text"] == big
    r = await h.client.post("/statuses", json={"text": big + "x"}, headers=h.auth("alice"))
    assert_clear_error(r, 422)
    assert (await h.user("display_rtl", "\u202e\U0001f600 \u05e9"))["display_name"] == (
        "\u202e\U0001f600 \u05e9"
    )


async def test_invalid_unicode_is_refused_and_writes_nothing(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    auth = {**h.auth("alice"), "Content-Type": "application/json"}
    for raw in (
        b'{"text": "lone \\ud800 high surrogate"}',
        b'{"text": "lone \\udfff low surrogate"}',
        b'{"text": "swapped \\ude00\\ud83d"}',
        b'{"text": "\xff\xfe not utf-8"}',
        b'{"text": "overlong \xc0\xaf"}',
        b'{"text": "truncated \xe2\x82"}',
    ):
        r = await h.client.post("/statuses", content=raw, headers=auth)
        assert_clear_error(r, 400, 422)
    for raw in (
        b'{"handle": "bad_\\ud800"}',
        b'{"handle": "mallory", "display_name": "\\udc00"}',
    ):
        r = await h.client.post("/users", content=raw, headers={"Content-Type": "application/json"})
        assert_clear_error(r, 400, 422)
    assert await contents(h) == before


async def test_huge_declared_body_is_refused_unread(hh: Harness) -> None:
    """A Content-Length over the limit is refused from the header alone: the small body that
    follows is never consumed."""
    h = hh
    before = await contents(h)
    consumed: list[int] = []

    async def small_body() -> AsyncIterator[bytes]:
        for chunk in (b'{"text": ', b'"x"}'):
            consumed.append(len(chunk))
            yield chunk

    r = await h.client.post(
        "/statuses",
        content=small_body(),
        headers={
            **h.auth("alice"),
            "Content-Type": "application/json",
            "Content-Length": str(MAX_BODY_BYTES + 1),
        },
    )
    assert assert_clear_error(r, 413) == "payload_too_large"
    assert consumed == []
    r = await h.client.post(
        "/users",
        content=b'{"handle": "mallory"}',
        headers={"Content-Type": "application/json", "Content-Length": "99999999999999999999"},
    )
    assert_clear_error(r, 413)
    for declared, status in (
        (b"9" * 5000, 413),
        ("１２".encode(), 400),  # fullwidth digits: str.isdigit() is True for them
        (b"-1", 400),
        (b"0x10", 400),
    ):
        r = await h.client.post(
            "/users",
            content=b'{"handle": "mallory"}',
            headers={"Content-Type": "application/json", "Content-Length": declared},
        )
        assert_clear_error(r, status)
    assert await contents(h) == before


async def test_huge_streamed_body_is_cut_off_at_the_limit(hh: Harness) -> None:
    """Without a Content-Length (chunked), the body is read only up to the limit."""
    h = hh
    before = await contents(h)
    chunk = 8 * 1024
    total = 10 * 1024 * 1024
    consumed: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(total // chunk):
            consumed.append(chunk)
            yield b"a" * chunk
        yield b'"}'

    r = await h.client.post(
        "/statuses",
        content=endless(),
        headers={**h.auth("alice"), "Content-Type": "application/json"},
    )
    assert_clear_error(r, 413)
    # The server stopped pulling chunks once past the limit (at most one chunk beyond it).
    assert sum(consumed) <= MAX_BODY_BYTES + chunk
    assert sum(consumed) < total
    assert await contents(h) == before


async def test_deeply_nested_and_malformed_json(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    auth = {**h.auth("alice"), "Content-Type": "application/json"}
    depth = 20_000  # 40 KB: under the body limit, far over Python's recursion limit
    for raw, status in (
        (b"[" * depth + b"]" * depth, 400),
        (b'{"text": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}", 400),
        (b'{"text": ' + b"[" * 100 + b"]" * 100 + b"}", 422),
        (b'{"text": "unterminated', 400),
        (b'{"text": "x",}', 400),
        (b"", 400),
        (b"\x00\x00\x00", 400),
        (b'{"text": NaN}', 422),
        (b'{"text": 1e999999}', 422),
        (b"[]", 422),
        (b"null", 422),
    ):
        r = await h.client.post("/statuses", content=raw, headers=auth)
        assert_clear_error(r, status)
    assert await contents(h) == before


async def test_wrong_content_types(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    body = b'{"text": "hello"}'
    for ctype in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/xml",
        "json",
    ):
        headers = h.auth("alice")
        if ctype is not None:
            headers = {**headers, "Content-Type": ctype}
        r = await h.client.post("/statuses", content=body, headers=headers)
        assert assert_clear_error(r, 415) == "unsupported_media_type"
    r = await h.client.post(
        "/users",
        content=b"handle=mallory",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_clear_error(r, 415)
    assert await contents(h) == before
    # Parameters and letter case of the media type do not matter.
    for ctype in ("application/json; charset=utf-8", "Application/JSON"):
        r = await h.client.post(
            "/statuses", content=body, headers={**h.auth("alice"), "Content-Type": ctype}
        )
        assert r.status_code == 201, r.text


async def test_bad_idempotency_keys(hh: Harness) -> None:
    h = hh
    before = await contents(h)
    for key in ("", "k" * 256):
        r = await h.client.post(
            "/statuses", json={"text": "x"}, headers={**h.auth("alice"), "Idempotency-Key": key}
        )
        assert_clear_error(r, 400)
    assert await contents(h) == before
    # An operator-looking key is just a key.
    weird = '{"$gt": ""}'
    first = await h.post("alice", "same", **{"Idempotency-Key": weird})
    r = await h.client.post(
        "/statuses", json={"text": "same"}, headers={**h.auth("alice"), "Idempotency-Key": weird}
    )
    assert (r.status_code, r.json()) == (200, first)
