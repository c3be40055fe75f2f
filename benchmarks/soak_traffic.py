"""The traffic of a soak run: a seeded, open-loop mix at a fixed arrival rate, as many clients
of one service would send it, recorded in a ledger (benchmarks/soak_ledger.py).

Open loop: operations arrive every 1/rate seconds whatever the answers take, so a slow service
is offered the same load as a fast one (a closed loop would quietly back off). Each arrival is
one client's action; one client (user) sends one request at a time, as an app does, so its own
ledger entries are in order. The mix is what a timeline's users do: mostly reading (first
pages, refreshes with `after`, older pages with `before`, unread counts), posting (each with an
Idempotency-Key; a post that got no answer is retried with the same key, as the contract asks),
moving their read marker, friend requests and accepts, unfriends, deletes, and now and then
re-sending an answered post (an idempotent retry, which must return the same status).

Users go away: every AWAY_EVERY_S one user stops sending for AWAY_S, and their activity record
is moved back past TIMELINE_ACTIVE_DAYS, as eight silent days would leave it (the service's
clock is the wall clock; this is the shortened clock of the soak). Their friends' posts skip
them meanwhile, and their first read back rebuilds their timeline (app/domain/activity.py).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from benchmarks.soak_ledger import Ledger, Post, SoakUser

# The mix, as relative weights: read-heavy as timelines are (about 3 reads per write).
MIX: dict[str, int] = {
    "first_page": 20,
    "refresh": 16,
    "older_page": 6,
    "unread_count": 8,
    "marker": 5,
    "post": 20,
    "retry_post": 3,
    "befriend": 7,
    "unfriend": 3,
    "delete": 4,
    "read_friend": 5,
    "me": 3,
}
# A post that got no answer is sent again with its key this often, this many times (a fault
# window is a few seconds; what is still unanswered after that is settled at the end).
POST_RETRY_S = 1.0
POST_RETRIES = 20
# Requests a run may have in flight at once: past it an arrival is dropped and counted
# (`shed`), so an overloaded service cannot make the driver grow without bound.
MAX_IN_FLIGHT = 256
# One user goes away this often, for this long.
AWAY_EVERY_S = 20.0
AWAY_S = 25.0
# Per request: far above any healthy latency; slower counts as a timeout.
REQUEST_TIMEOUT_S = 30.0
# Initial friends per user, made before the load starts (requests + accepts).
INITIAL_FRIENDS = 6


@dataclass
class Sample:
    at: float  # monotonic, at the answer
    ms: float
    code: str  # "200", "503", "transport", "timeout"


@dataclass
class Traffic:
    client: httpx.AsyncClient
    rng: random.Random
    ledger: Ledger = field(default_factory=Ledger)
    samples: list[Sample] = field(default_factory=list)  # taken by the sampler every window
    # Every request answered 5xx or not at all, kept for the whole run (checked against the
    # fault windows at the end).
    failures: list[Sample] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    shed: int = 0
    in_flight: int = 0
    returns: int = 0  # users brought back after going away
    away: Away | None = None  # set before the run: how users go away
    returning: set[asyncio.Task[None]] = field(default_factory=set)  # their first reads back

    async def call(
        self, action: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request; the answer, or None when there was none (recorded either way). Any
        status code is returned: the caller decides what it expected."""
        start = time.perf_counter()
        try:
            r = await self.client.request(method, path, **kwargs)
            code = str(r.status_code)
        except httpx.TimeoutException:
            r, code = None, "timeout"
        except httpx.TransportError:
            r, code = None, "transport"
        sample = Sample(time.monotonic(), (time.perf_counter() - start) * 1000, code)
        self.samples.append(sample)
        if not code.startswith(("2", "3", "4")):
            self.failures.append(sample)
        return r

    async def probe_call(
        self, action: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """benchmarks.probe's caller: its requests count like any, success only on 2xx."""
        r = await self.call(action, method, path, **kwargs)
        return r if r is not None and r.is_success else None

    # -- setup ---------------------------------------------------------------------------

    async def create_users(self, prefix: str, n: int) -> None:
        for i in range(n):
            handle = f"{prefix}_{i}"
            r = await self.client.post("/users", json={"handle": handle})
            r.raise_for_status()
            data = r.json()
            self.ledger.users[handle] = SoakUser(handle, data["token"], data["id"])

    async def befriend_initial(self) -> None:
        handles = list(self.ledger.users)
        for i, a in enumerate(handles):
            for b in self.rng.sample(handles, min(INITIAL_FRIENDS // 2, len(handles) - 1)):
                if b != a and self.ledger.pairs.get(self.ledger.pair(a, b)) != "friends":
                    await self._befriend(self.ledger.users[a], self.ledger.users[b])
            if i % 50 == 49:
                await asyncio.sleep(0)

    # -- the open loop -------------------------------------------------------------------

    async def run(
        self, rate: float, seconds: float, max_ops: int, stop: asyncio.Event | None = None
    ) -> None:
        """Arrivals every 1/rate s (seeded exponential gaps: a Poisson stream) until `seconds`,
        `max_ops` or `stop`; then waits for the ones in flight."""
        actions, weights = list(MIX), list(MIX.values())
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_at = start
        next_away = start + AWAY_EVERY_S
        sent = 0
        while sent < max_ops:
            next_at += self.rng.expovariate(rate)
            if next_at - start >= seconds or (stop is not None and stop.is_set()):
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            action = self.rng.choices(actions, weights)[0]
            sent += 1
            if self.in_flight >= MAX_IN_FLIGHT:
                self.shed += 1
                continue
            if time.monotonic() >= next_away:
                next_away += AWAY_EVERY_S
                action = "go_away"
            user = self._pick_user()
            if user is None:
                self.shed += 1
                continue
            task = asyncio.create_task(self._act(user, action))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    def _pick_user(self) -> SoakUser | None:
        """A random user who is here and idle (a few tries, then any who is here)."""
        now = time.monotonic()
        users = list(self.ledger.users.values())
        for _ in range(8):
            u = self.rng.choice(users)
            if u.away_until <= now and not u.lock.locked():
                return u
        here = [u for u in users if u.away_until <= now]
        return self.rng.choice(here) if here else None

    async def _act(self, me: SoakUser, action: str) -> None:
        self.in_flight += 1
        self.ops[action] += 1
        try:
            async with me.lock:
                await ACTIONS[action](self, me)
        finally:
            self.in_flight -= 1

    def other(self, me: SoakUser) -> SoakUser:
        while True:
            u = self.rng.choice(list(self.ledger.users.values()))
            if u is not me:
                return u

    # -- actions -------------------------------------------------------------------------

    async def first_page(self, me: SoakUser) -> None:
        r = await self.call(
            "first_page", "GET", "/timeline", params={"limit": "20"}, headers=me.auth
        )
        if r is not None and r.status_code == 200:
            data = r.json()
            me.next_cursor = data["next_cursor"]
            if data["items"]:
                me.newest_cursor = data["newest_cursor"]
                me.newest_id = data["items"][0]["id"]

    async def refresh(self, me: SoakUser) -> None:
        if me.newest_cursor is None:
            await self.first_page(me)
            return
        params = {"limit": "20", "after": me.newest_cursor}
        r = await self.call("refresh", "GET", "/timeline", params=params, headers=me.auth)
        if r is not None and r.status_code == 200 and r.json()["items"]:
            me.newest_cursor = r.json()["newest_cursor"]
            me.newest_id = r.json()["items"][0]["id"]

    async def older_page(self, me: SoakUser) -> None:
        if me.next_cursor is None:
            await self.first_page(me)
            return
        params = {"limit": "20", "before": me.next_cursor}
        r = await self.call("older_page", "GET", "/timeline", params=params, headers=me.auth)
        if r is not None and r.status_code == 200:
            me.next_cursor = r.json()["next_cursor"]

    async def unread_count(self, me: SoakUser) -> None:
        await self.call("unread_count", "GET", "/timeline/unread_count", headers=me.auth)

    async def marker(self, me: SoakUser) -> None:
        if me.newest_id is None:
            await self.first_page(me)
            return
        target = me.newest_id
        body = {"home": {"last_read_id": target}}
        r = await self.call("marker", "POST", "/markers", json=body, headers=me.auth)
        if r is None or r.status_code >= 500:
            me.marker_uncertain += 1
        elif r.status_code == 200:
            home = r.json()["home"]
            if home["last_read_id"] == target and (me.marker_max is None or target > me.marker_max):
                me.marker_moves += 1
            if me.marker_max is None or home["last_read_id"] > me.marker_max:
                me.marker_max = home["last_read_id"]

    async def post(self, me: SoakUser) -> None:
        key = uuid.UUID(int=self.rng.getrandbits(128)).hex
        post = Post(me.handle, key, f"soak {me.handle} {key}")
        self.ledger.posts[key] = post
        await self._send_post(me, post)

    async def _send_post(self, me: SoakUser, post: Post) -> None:
        headers = {**me.auth, "Idempotency-Key": post.key}
        for _ in range(POST_RETRIES):
            r = await self.call(
                "post", "POST", "/statuses", json={"text": post.text}, headers=headers
            )
            if r is not None and r.status_code in (200, 201):
                status_id = r.json()["id"]
                if post.status_id is not None:
                    self.ledger.retries_checked += 1
                    if status_id != post.status_id:
                        self.ledger.retry_duplicates += 1
                post.status_id = status_id
                return
            if r is not None and r.status_code < 500 and r.status_code != 409:
                raise RuntimeError(f"post answered {r.status_code}: {r.text}")
            await asyncio.sleep(POST_RETRY_S)  # no answer, 5xx or in flight: same key again

    async def retry_post(self, me: SoakUser) -> None:
        """An answered post sent again with its key: the same status must come back."""
        mine = [p for p in self.ledger.posts.values() if p.author == me.handle and p.status_id]
        if mine:
            await self._send_post(me, self.rng.choice(mine))

    async def befriend(self, me: SoakUser) -> None:
        other = self.other(me)
        if other.away_until > time.monotonic():
            return
        await self._befriend(me, other)

    async def _befriend(self, me: SoakUser, other: SoakUser) -> None:
        ledger = self.ledger
        pair = ledger.pair(me.handle, other.handle)
        async with ledger.pair_lock(me.handle, other.handle):
            if ledger.pairs.get(pair) == "friends":
                return
            body = {"to": other.handle}
            r = await self.call("befriend", "POST", "/friend-requests", json=body, headers=me.auth)
            if r is None or r.status_code >= 500:
                ledger.pairs[pair] = "unknown"
                return
            if r.status_code == 409:  # friend_limit: nothing changed
                return
            if r.json()["status"] == "accepted":
                ledger.pairs[pair] = "friends"
                return
            ledger.pairs[pair] = "pending"
            path = f"/friend-requests/{me.handle}/accept"
            r = await self.call("accept", "POST", path, headers=other.auth)
            if r is None or r.status_code >= 500:
                ledger.pairs[pair] = "unknown"
            elif r.status_code == 200:
                ledger.pairs[pair] = "friends"

    async def unfriend(self, me: SoakUser) -> None:
        ledger = self.ledger
        friends = ledger.friends_of(me.handle)
        if not friends:
            return
        other = self.rng.choice(friends)
        pair = ledger.pair(me.handle, other)
        async with ledger.pair_lock(me.handle, other):
            r = await self.call("unfriend", "DELETE", f"/friends/{other}", headers=me.auth)
            if r is not None and r.status_code == 204:
                ledger.pairs[pair] = "none"
            else:
                ledger.pairs[pair] = "unknown"

    async def delete(self, me: SoakUser) -> None:
        ledger = self.ledger
        mine = [
            p.status_id
            for p in ledger.posts.values()
            if p.author == me.handle
            and p.status_id
            and p.status_id not in ledger.deleted
            and p.status_id not in ledger.maybe_deleted
        ]
        if not mine:
            return
        status_id = self.rng.choice(mine)
        r = await self.call("delete", "DELETE", f"/statuses/{status_id}", headers=me.auth)
        if r is not None and r.status_code == 204:
            ledger.deleted.add(status_id)
        else:
            ledger.maybe_deleted.add(status_id)

    async def read_friend(self, me: SoakUser) -> None:
        other = self.other(me)
        await self.call("read_friend", "GET", f"/users/{other.handle}/statuses", headers=me.auth)

    async def me(self, me: SoakUser) -> None:
        await self.call("me", "GET", "/me", headers=me.auth)

    async def go_away(self, me: SoakUser) -> None:
        """Silent for AWAY_S, with an activity record as old as TIMELINE_ACTIVE_DAYS + 1 days
        would leave it; then a first page (the return) on the way back."""
        assert self.away is not None
        await self.away.age(me)
        me.away_until = time.monotonic() + AWAY_S
        asyncio.get_running_loop().call_later(AWAY_S, self._come_back, me)

    def _come_back(self, me: SoakUser) -> None:
        self.returns += 1
        task = asyncio.create_task(self._act(me, "first_page"))
        self.returning.add(task)
        task.add_done_callback(self.returning.discard)


ACTIONS = {
    "first_page": Traffic.first_page,
    "refresh": Traffic.refresh,
    "older_page": Traffic.older_page,
    "unread_count": Traffic.unread_count,
    "marker": Traffic.marker,
    "post": Traffic.post,
    "retry_post": Traffic.retry_post,
    "befriend": Traffic.befriend,
    "unfriend": Traffic.unfriend,
    "delete": Traffic.delete,
    "read_friend": Traffic.read_friend,
    "me": Traffic.me,
    "go_away": Traffic.go_away,
}


@dataclass
class Away:
    """Moves a user's `user_activity.last_read_at` back past the window, directly in the
    database (the soak's shortened clock: what days without a read would leave)."""

    mongo: AsyncMongoClient[dict[str, Any]]
    db_name: str
    active_days: int
    aged: int = 0
    failed: int = 0

    async def age(self, user: SoakUser) -> None:
        then = datetime.now(UTC) - timedelta(days=self.active_days + 1)
        try:
            await self.mongo[self.db_name]["user_activity"].update_one(
                {"_id": ObjectId(user.user_id)},
                {
                    "$set": {"last_read_at": then},
                    "$setOnInsert": {"materialized": True, "returns": 0},
                },
                upsert=True,
            )
            self.aged += 1
        except PyMongoError:
            self.failed += 1  # the database is restarting: this user simply stays active
