"""GET /timeline (order, visibility, cursors, gap, the TIMELINE_MAX bound) and GET /health, on
every strategy."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.parsing import DEFAULT_LIMIT
from tests.harness import Harness
from tests.test_api_errors import assert_error

PAGE_KEYS = {"items", "next_cursor", "newest_cursor", "gap"}


async def posts(h: Harness, handle: str, n: int, prefix: str = "s") -> list[str]:
    """`n` statuses of `handle`; their ids, oldest first."""
    return [(await h.post(handle, f"{prefix}{i}"))["id"] for i in range(n)]


async def pages(h: Harness, handle: str, limit: int) -> list[list[str]]:
    """The whole timeline as the pages a client sees, following next_cursor."""
    out: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = await h.timeline(handle, **params)
        assert set(page) == PAGE_KEYS and page["gap"] is False
        out.append([item["id"] for item in page["items"]])
        if page["next_cursor"] is None:
            return out
        assert len(page["items"]) == limit
        params = {"limit": limit, "before": page["next_cursor"]}


async def test_empty_timeline(h: Harness) -> None:
    await h.user("alice")
    page = await h.timeline("alice")
    assert page == {"items": [], "next_cursor": None, "newest_cursor": None, "gap": False}


async def test_own_statuses_at_once_newest_first_as_status_objects(h: Harness) -> None:
    await h.user("alice")
    first = await h.post("alice", "first")
    second = await h.post("alice", "second")
    page = await h.timeline("alice")  # no drain: one's own status is visible at once
    assert page["items"] == [second, first]
    assert page["next_cursor"] is None and page["gap"] is False


async def test_friends_statuses_after_drain_with_backfill(h: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    early = await posts(h, "bob", 2, "early")  # before the friendship: backfilled
    await h.befriend("alice", "bob")
    mine = await h.post("alice", "mine")
    late = await h.post("bob", "late")
    stranger = await h.post("carol", "a stranger's")
    await h.drain()
    expected = [late["id"], mine["id"], *early[::-1]]
    assert await h.timeline_ids("alice") == expected
    assert await h.timeline_ids("bob") == expected
    assert await h.timeline_ids("carol") == [stranger["id"]]  # her own, nothing of theirs


async def test_unfriend_removes_old_statuses_both_ways(h: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")
    await h.befriend("alice", "carol")
    bobs = await posts(h, "bob", 3, "bob")
    alices = await posts(h, "alice", 2, "alice")
    carols = await posts(h, "carol", 1, "carol")
    await h.drain()
    assert await h.timeline_ids("alice") == [*carols[::-1], *alices[::-1], *bobs[::-1]]
    await h.unfriend("alice", "bob")
    await h.drain()
    assert await h.timeline_ids("alice") == [*carols, *alices[::-1]]
    assert await h.timeline_ids("bob") == bobs[::-1]
    assert await h.timeline_ids("carol") == [*carols, *alices[::-1]]
    # Friends again: everything comes back.
    await h.befriend("bob", "alice")
    await h.drain()
    assert await h.timeline_ids("bob") == [*alices[::-1], *bobs[::-1]]


async def test_limit_and_before_pages(h: Harness) -> None:
    await h.user("alice")
    ids = await posts(h, "alice", DEFAULT_LIMIT + 2)
    newest_first = ids[::-1]
    first = await h.timeline("alice")  # the default limit
    assert [i["id"] for i in first["items"]] == newest_first[:DEFAULT_LIMIT]
    assert first["next_cursor"] is not None
    assert await pages(h, "alice", 7) == [
        newest_first[0:7],
        newest_first[7:14],
        newest_first[14:21],
        newest_first[21:],
    ]
    # A last page that is exactly full has no next page.
    assert await pages(h, "alice", 11) == [newest_first[:11], newest_first[11:]]


async def test_after_returns_only_newer_items_and_newest_cursor(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    old = await posts(h, "alice", 3, "old")
    page = await h.timeline("alice", limit=2)
    newest = page["newest_cursor"]
    assert [i["id"] for i in page["items"]] == old[:0:-1] and newest is not None

    # Nothing new yet: an empty refresh.
    empty = await h.timeline("alice", after=newest)
    assert empty == {"items": [], "next_cursor": None, "newest_cursor": None, "gap": False}

    mine = await h.post("alice", "new mine")
    theirs = await h.post("bob", "new theirs")
    await h.drain()
    fresh = await h.timeline("alice", after=newest)
    assert [i["id"] for i in fresh["items"]] == [theirs["id"], mine["id"]]
    assert fresh["gap"] is False and fresh["next_cursor"] is None
    # Its newest_cursor is the newest item: refreshing from there is empty again.
    again = await h.timeline("alice", after=fresh["newest_cursor"])
    assert again["items"] == []
    # The refresh cursor of the first page also works as a `before` cursor.
    older = await h.timeline("alice", before=newest)
    assert [i["id"] for i in older["items"]] == old[1::-1]


async def test_gap_when_more_arrived_than_the_limit(h: Harness) -> None:
    await h.user("alice")
    await posts(h, "alice", 2, "seen")
    newest = (await h.timeline("alice"))["newest_cursor"]
    arrived = await posts(h, "alice", 5, "new")
    page = await h.timeline("alice", after=newest, limit=2)
    # The newest `limit` items, and a flag that some newer than the cursor were skipped.
    assert [i["id"] for i in page["items"]] == arrived[:2:-1]
    assert page["gap"] is True
    assert page["newest_cursor"] is not None and page["next_cursor"] is not None
    # Exactly `limit` new items: no gap.
    exact = await h.timeline("alice", after=newest, limit=5)
    assert [i["id"] for i in exact["items"]] == arrived[::-1] and exact["gap"] is False
    # Filling the gap: older pages from next_cursor reach back to the old items.
    rest = await h.timeline("alice", before=page["next_cursor"], limit=100)
    assert [i["id"] for i in rest["items"]][:3] == arrived[2::-1]


@pytest.mark.parametrize("timeline_max", [3])
async def test_timeline_max_bounds_every_page(h: Harness) -> None:
    await h.user("alice")
    await h.user("bob")
    await h.befriend("alice", "bob")
    bobs = await posts(h, "bob", 2, "bob")
    alices = await posts(h, "alice", 3, "alice")
    await h.drain()
    newest3 = alices[::-1]
    assert await h.timeline_ids("alice") == newest3
    assert await h.timeline_ids("bob") == newest3
    # Across pages the bound holds too: 2 + 1, then nothing more.
    assert await pages(h, "alice", 2) == [newest3[:2], newest3[2:]]
    assert await pages(h, "bob", 1) == [[i] for i in newest3]
    refresh = await h.timeline("alice", after=(await h.timeline("alice", limit=2))["next_cursor"])
    assert [i["id"] for i in refresh["items"]] == newest3[:1]

    # Deleting one of the three lets the next newest (a friend's) move up, after the worker.
    await h.delete("alice", alices[2])
    await h.drain()
    expected = [alices[1], alices[0], bobs[1]]
    assert await h.timeline_ids("alice") == expected
    assert await h.timeline_ids("bob") == expected
    # Unfriending leaves each with their own, still bounded.
    await h.unfriend("alice", "bob")
    await h.drain()
    assert await h.timeline_ids("alice") == alices[1::-1]
    assert await h.timeline_ids("bob") == bobs[::-1]


async def test_health_reports_the_backlog(h: Harness, strategy: str) -> None:
    await h.user("alice")
    await h.user("bob")

    async def health() -> dict[str, Any]:
        r = await h.client.get("/health")  # no token needed
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    idle = await health()
    assert {"status", "strategy", "database", "pending_events"} <= set(idle)
    assert idle["status"] == "ok" and idle["strategy"] == strategy
    assert idle["database"] == "mongodb"  # the harness passes a URL; no embedded server
    assert idle["pending_events"] == 0
    await h.befriend("alice", "bob")
    await h.post("alice", "one")
    busy = await health()
    assert busy["pending_events"] > 0
    applied = await h.drain()
    assert applied == busy["pending_events"]
    assert (await health())["pending_events"] == 0


async def test_timeline_needs_a_token(h: Harness) -> None:
    assert_error(await h.client.get("/timeline"), 401, "missing_token")
