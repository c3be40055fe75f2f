"""A hidden status or user and a missing one: the same answer and the same lookups
(docs/security.md, "Authorization and privacy"). `python -m benchmarks abuse` measures the time."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from bson import ObjectId

from app.domain.graph import Graph
from app.domain.users import MAX_ECHOED_HANDLE
from tests.harness import Harness

pytestmark = pytest.mark.parametrize("strategy", ["receiver_copies"])

# Headers that say how many requests the caller has left, not anything about the resource.
PER_REQUEST_HEADERS = {"date", "x-ratelimit-remaining", "x-ratelimit-reset"}


def answer(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in r.headers.items() if k not in PER_REQUEST_HEADERS}
    return r.status_code, r.content, headers


class EdgeLookups:
    """Counts friendship look-ups (a spy on the real method: the database still answers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = Graph.are_friends

        async def counted(graph: Graph, a: ObjectId, b: ObjectId, **kw: Any) -> bool:
            self.calls += 1
            return await real(graph, a, b, **kw)

        monkeypatch.setattr(Graph, "are_friends", counted)

    def during(self) -> int:
        n, self.calls = self.calls, 0
        return n


async def test_a_hidden_status_and_a_missing_one_answer_alike(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.user("alice")
    await h.user("mallory")
    hidden = (await h.post("alice", "private"))["id"]
    missing = str(ObjectId())
    lookups = EdgeLookups(monkeypatch)
    answers = []
    for status_id in (hidden, missing, "not-an-id"):
        r = await h.client.get(f"/statuses/{status_id}", headers=h.auth("mallory"))
        assert r.status_code == 404
        answers.append((answer(r), lookups.during()))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1] == 1  # the friendship is looked up for a missing id too


async def test_a_hidden_user_and_a_missing_one_answer_alike(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.user("alice")
    await h.user("mallory")
    lookups = EdgeLookups(monkeypatch)
    hidden = await h.client.get("/users/alice/statuses", headers=h.auth("mallory"))
    hidden_lookups = lookups.during()
    await h.ctx.store.users.delete_one({"handle": "alice"})
    missing = await h.client.get("/users/alice/statuses", headers=h.auth("mallory"))
    assert answer(hidden) == answer(missing)
    assert hidden_lookups == lookups.during() == 1
    # One wording for every unknown handle, on every endpoint.
    for method, path in (
        ("GET", "/users/alice"),
        ("POST", "/friend-requests/alice/accept"),
        ("DELETE", "/friend-requests/alice"),
        ("DELETE", "/friends/alice"),
    ):
        r = await h.client.request(method, path, headers=h.auth("mallory"))
        assert r.content == missing.content, (method, path, r.text)


async def test_a_404_echoes_at_most_30_characters_of_a_handle(h: Harness) -> None:
    await h.user("mallory")
    long = "x" * 60_000
    for path in (f"/users/{long}", f"/users/{long}/statuses"):
        r = await h.client.get(path, headers=h.auth("mallory"))
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"no user {'x' * MAX_ECHOED_HANDLE!r}"
    r = await h.client.post("/friend-requests", json={"to": "y" * 30}, headers=h.auth("mallory"))
    assert r.status_code == 404 and len(r.content) < 200
