"""The clients of `python -m benchmarks load` (benchmarks.load): the mixed workload each runs
over HTTP, the answers it expects, and the check afterwards that nothing acknowledged was lost
and nothing removed came back."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

# Page size for the verification reads (the contract's maximum).
PAGE = 100
# The mix, as relative weights (read-heavy, as timelines are).
MIX: dict[str, int] = {
    "read_timeline": 40,
    "post": 25,
    "read_friend": 12,
    "befriend": 10,
    "unfriend": 5,
    "delete": 5,
    "read_me": 3,
}
# Expected answers per action; anything else is an error.
EXPECTED: dict[str, set[int]] = {
    "create_user": {201},
    "read_timeline": {200},
    "post": {201},
    "read_friend": {200, 404},
    "friend_request": {200, 201},
    "accept": {200, 404},  # 404: already accepted (a crossing request settled it)
    "unfriend": {204},
    "delete": {204},
    "read_me": {200},
    "probe_setup": {200, 201},
    "probe_post": {201},
    "probe_read": {200},
}


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    by_action: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    # The probe's own requests (benchmarks/probe.py): not in `requests` nor in the latencies,
    # so that the mix's figures stay comparable with runs before the probe; errors count.
    probe_requests: int = 0


@dataclass
class User:
    handle: str
    token: str
    newest_cursor: str | None = None
    own: list[str] = field(default_factory=list)  # acknowledged, not deleted

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Run:
    client: httpx.AsyncClient
    stats: Stats
    deadline: float
    max_requests: int
    rng: random.Random
    users: list[User] = field(default_factory=list)
    # id -> author handle, of every status acknowledged with 201 (deleted ones removed).
    acknowledged: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.stats.requests < self.max_requests

    async def call(
        self, action: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        probe = action.startswith("probe_")
        if probe:
            self.stats.probe_requests += 1
        else:
            self.stats.requests += 1
            self.stats.by_action[action] += 1
        start = time.perf_counter()
        try:
            r = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.errors[f"{action}: {type(exc).__name__}"] += 1
            return None
        if not probe:
            self.stats.latencies_ms.append((time.perf_counter() - start) * 1000)
        if r.status_code not in EXPECTED[action]:
            self.stats.errors[f"{action}: {r.status_code}"] += 1
            return None
        return r


async def create_user(run: Run, prefix: str, i: int) -> User:
    handle = f"{prefix}_{i}"
    r = await run.call("create_user", "POST", "/users", json={"handle": handle})
    if r is None:
        raise RuntimeError(f"could not create user {handle}")
    return User(handle, r.json()["token"])


async def act(run: Run, me: User, action: str) -> None:
    rng = run.rng
    other = rng.choice(run.users)
    if action == "read_timeline":
        params = {"limit": "20"}
        if me.newest_cursor is not None and rng.random() < 0.5:
            params["after"] = me.newest_cursor
        r = await run.call("read_timeline", "GET", "/timeline", params=params, headers=me.auth)
        if r is not None and r.json()["newest_cursor"] is not None:
            me.newest_cursor = r.json()["newest_cursor"]
    elif action == "post":
        key = uuid.uuid4().hex
        body = {"text": f"{me.handle} says {key}"}
        headers = {**me.auth, "Idempotency-Key": key}
        r = await run.call("post", "POST", "/statuses", json=body, headers=headers)
        if r is not None:
            status_id = r.json()["id"]
            run.acknowledged[status_id] = me.handle
            me.own.append(status_id)
    elif action == "read_friend":
        # 404 when `other` is not (or no longer) a friend: the contract's answer, not an error.
        await run.call("read_friend", "GET", f"/users/{other.handle}/statuses", headers=me.auth)
    elif action == "befriend" and other is not me:
        r = await run.call(
            "friend_request", "POST", "/friend-requests", json={"to": other.handle}, headers=me.auth
        )
        if r is not None and r.json()["status"] == "pending":
            await run.call(
                "accept", "POST", f"/friend-requests/{me.handle}/accept", headers=other.auth
            )
    elif action == "unfriend" and other is not me:
        await run.call("unfriend", "DELETE", f"/friends/{other.handle}", headers=me.auth)
    elif action == "delete" and me.own:
        status_id = me.own.pop(rng.randrange(len(me.own)))
        r = await run.call("delete", "DELETE", f"/statuses/{status_id}", headers=me.auth)
        if r is not None:
            run.acknowledged.pop(status_id, None)
            run.deleted.add(status_id)
    elif action == "read_me":
        await run.call("read_me", "GET", "/me", headers=me.auth)


async def client_loop(run: Run, me: User) -> None:
    actions, weights = list(MIX), list(MIX.values())
    while run.more():
        await act(run, me, run.rng.choices(actions, weights)[0])


async def pages(client: httpx.AsyncClient, path: str, user: User, param: str) -> list[Any]:
    items: list[Any] = []
    params = {"limit": str(PAGE)}
    while True:
        r = await client.get(path, params=params, headers=user.auth)
        r.raise_for_status()
        data = r.json()
        items += data["items"]
        if data["next_cursor"] is None:
            return items
        params = {"limit": str(PAGE), param: data["next_cursor"]}


async def verify(run: Run, timeline_max: int) -> dict[str, int]:
    """Compare every user's timeline with what the acknowledged writes imply."""
    lost = unexpected = checked = 0
    by_author: dict[str, list[str]] = {}
    for status_id, author in run.acknowledged.items():
        by_author.setdefault(author, []).append(status_id)
    for user in run.users:
        friends = await pages(run.client, "/friends", user, "cursor")
        authors = {user.handle} | {f["handle"] for f in friends}
        reachable = sorted(
            (sid for a in authors for sid in by_author.get(a, [])), reverse=True
        )  # ids grow with time: newest first
        expected = set(reachable[:timeline_max])
        timeline = {item["id"] for item in await pages(run.client, "/timeline", user, "before")}
        checked += len(expected)
        lost += len(expected - timeline)
        ours = timeline & (set(run.acknowledged) | run.deleted)
        unexpected += len(ours - set(reachable))
    return {"lost": lost, "unexpected": unexpected, "checked_pairs": checked}
