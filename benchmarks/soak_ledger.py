"""What a soak run's clients were told (benchmarks/soak_traffic.py), and the end-of-run check that
the service still holds exactly that: every acknowledged post once, no acknowledged delete come
back, every acknowledged friendship change in force, every acknowledged marker move kept once.

A request that failed without an answer (the API was killed, the database restarted) may or may
not have been applied: its effect is *uncertain*, never counted as lost or duplicated, and
settled at the end from the service's own answer (a post is retried with its Idempotency-Key,
which says whether it exists). Everything acknowledged is certain and is checked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

# Page size for the verification reads (the contract's maximum).
PAGE = 100


@dataclass
class SoakUser:
    handle: str
    token: str
    user_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    away_until: float = 0.0  # monotonic; the user sends nothing before it
    newest_cursor: str | None = None
    next_cursor: str | None = None
    newest_id: str | None = None  # of the last first page: what a marker move points at
    # Read markers: the greatest id a POST /markers acknowledged, how many acknowledged POSTs
    # moved it, and how many got no answer (each may have moved it once).
    marker_max: str | None = None
    marker_moves: int = 0
    marker_uncertain: int = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Post:
    author: str
    key: str
    text: str
    status_id: str | None = None  # None until acknowledged (201, or 200 for a retry)


@dataclass
class Ledger:
    users: dict[str, SoakUser] = field(default_factory=dict)
    posts: dict[str, Post] = field(default_factory=dict)  # by Idempotency-Key
    deleted: set[str] = field(default_factory=set)  # status ids, delete acknowledged
    maybe_deleted: set[str] = field(default_factory=set)  # a delete got no answer
    # Friendship of each pair (sorted handles): "friends", "none", "pending" (a request from
    # the first to the second is waiting: `pending_from` says who asked) or "unknown".
    pairs: dict[tuple[str, str], str] = field(default_factory=dict)
    pending_from: dict[tuple[str, str], str] = field(default_factory=dict)
    pair_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # An idempotent retry answered with another status than the first answer: applied twice.
    retry_duplicates: int = 0
    retries_checked: int = 0

    @staticmethod
    def pair(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)

    def pair_lock(self, a: str, b: str) -> asyncio.Lock:
        return self.pair_locks.setdefault(self.pair(a, b), asyncio.Lock())

    def friends_of(self, handle: str) -> list[str]:
        return [
            b if a == handle else a
            for (a, b), state in self.pairs.items()
            if state == "friends" and handle in (a, b)
        ]

    def acknowledged_posts(self) -> list[Post]:
        return [p for p in self.posts.values() if p.status_id is not None]


async def all_pages(
    client: httpx.AsyncClient, path: str, user: SoakUser, param: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {"limit": str(PAGE)}
    while True:
        r = await client.get(path, params=params, headers=user.auth)
        r.raise_for_status()
        data = r.json()
        items += data["items"]
        if data["next_cursor"] is None:
            return items
        params = {"limit": str(PAGE), param: data["next_cursor"]}


@dataclass
class Verdict:
    lost: int = 0  # acknowledged, not there
    duplicated: int = 0  # there twice (or a retry answered with a second status)
    resurrected: int = 0  # acknowledged delete or unfriend, yet shown
    checked: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        if len(self.problems) < 50:  # enough to diagnose; bounded in the report
            self.problems.append(f"{kind}: {text}")


async def settle(client: httpx.AsyncClient, ledger: Ledger) -> None:
    """After the run and the drain: turn every uncertain effect into a known one, by asking the
    service (never counted as lost or duplicated: nobody was told it happened)."""
    for post in ledger.posts.values():
        if post.status_id is None:  # no answer: the same key again says whether it exists
            user = ledger.users[post.author]
            r = await client.post(
                "/statuses",
                json={"text": post.text},
                headers={**user.auth, "Idempotency-Key": post.key},
            )
            r.raise_for_status()
            post.status_id = r.json()["id"]
    by_id = {p.status_id: p for p in ledger.posts.values()}
    for status_id in ledger.maybe_deleted - ledger.deleted:
        author = ledger.users[by_id[status_id].author]
        r = await client.get(f"/statuses/{status_id}", headers=author.auth)
        if r.status_code == 404:
            ledger.deleted.add(status_id)
    for (a, b), state in list(ledger.pairs.items()):
        if state in ("unknown", "pending"):
            friends = {
                f["handle"] for f in await all_pages(client, "/friends", ledger.users[a], "cursor")
            }
            ledger.pairs[(a, b)] = "friends" if b in friends else "none"


async def verify(client: httpx.AsyncClient, ledger: Ledger, timeline_max: int) -> Verdict:
    """Compare what the service holds with the ledger, for every user."""
    v = Verdict()
    v.duplicated += ledger.retry_duplicates
    live = {
        p.status_id: p for p in ledger.acknowledged_posts() if p.status_id not in ledger.deleted
    }
    by_author: dict[str, list[str]] = {}
    for status_id, post in live.items():
        assert status_id is not None
        by_author.setdefault(post.author, []).append(status_id)
    for user in ledger.users.values():
        await _verify_user(client, ledger, user, by_author, timeline_max, v)
    return v


async def _verify_user(
    client: httpx.AsyncClient,
    ledger: Ledger,
    user: SoakUser,
    by_author: dict[str, list[str]],
    timeline_max: int,
    v: Verdict,
) -> None:
    """Add to `v` everything wrong with one user: their statuses, friendships, marker and
    timeline, read in that order (each check's problems follow the one before)."""
    await _verify_own_posts(client, ledger, user, by_author, v)
    expected_friends = await _verify_friendships(client, ledger, user, v)
    await _verify_marker(client, user, v)
    await _verify_timeline(client, ledger, user, by_author, expected_friends, timeline_max, v)


async def _verify_own_posts(
    client: httpx.AsyncClient,
    ledger: Ledger,
    user: SoakUser,
    by_author: dict[str, list[str]],
    v: Verdict,
) -> None:
    """Every live acknowledged post of `user` is among their statuses once; no deleted one is."""
    # The source of truth: the user's own statuses.
    own = await all_pages(client, f"/users/{user.handle}/statuses", user, "before")
    texts = Counter(item["text"] for item in own)
    ids = {item["id"] for item in own}
    for status_id in by_author.get(user.handle, []):
        v.checked["posts"] += 1
        if status_id not in ids:
            v.lost += 1
            v.problem("post lost", f"{user.handle} {status_id}")
    for text, n in texts.items():
        if n > 1 and text.startswith("soak "):
            v.duplicated += n - 1
            v.problem("post duplicated", f"{user.handle} {text!r} x{n}")
    for status_id in ids & ledger.deleted:
        v.resurrected += 1
        v.problem("deleted post back", f"{user.handle} {status_id}")


async def _verify_friendships(
    client: httpx.AsyncClient, ledger: Ledger, user: SoakUser, v: Verdict
) -> set[str]:
    """Every friendship the ledger holds for `user` is listed, no acknowledged unfriend is;
    returns the friends the ledger expects (the timeline check's authors)."""
    # Friendships: every pair the ledger knows, as GET /friends lists it.
    friends = {f["handle"] for f in await all_pages(client, "/friends", user, "cursor")}
    expected_friends = set(ledger.friends_of(user.handle))
    v.checked["friendships"] += len(expected_friends)
    for other in expected_friends - friends:
        v.lost += 1
        v.problem("friendship lost", f"{user.handle} - {other}")
    known = {b if a == user.handle else a for (a, b) in ledger.pairs if user.handle in (a, b)}
    for other in (friends - expected_friends) & known:
        v.resurrected += 1
        v.problem("unfriend undone", f"{user.handle} - {other}")
    return expected_friends


async def _verify_marker(client: httpx.AsyncClient, user: SoakUser, v: Verdict) -> None:
    """The home marker is at least the acknowledged position, moved no more often than sent."""
    # Markers: the acknowledged position is kept, each move counted once.
    r = await client.get("/markers", headers=user.auth)
    r.raise_for_status()
    home = r.json()["home"]
    if user.marker_max is not None:
        v.checked["markers"] += 1
        if home is None or home["last_read_id"] < user.marker_max:
            v.lost += 1
            v.problem("marker lost", f"{user.handle} {home} < {user.marker_max}")
        elif home["version"] > user.marker_moves + user.marker_uncertain:
            v.duplicated += 1
            v.problem("marker applied twice", f"{user.handle} {home} moves {user.marker_moves}")


async def _verify_timeline(
    client: httpx.AsyncClient,
    ledger: Ledger,
    user: SoakUser,
    by_author: dict[str, list[str]],
    expected_friends: set[str],
    timeline_max: int,
    v: Verdict,
) -> None:
    """The timeline holds each of the newest `timeline_max` reachable live posts once, and none
    of the run's posts that `user` cannot reach (deleted, or by an author not a friend)."""
    # The timeline: exactly the newest `timeline_max` live posts of the user and their friends.
    reachable = sorted(
        (sid for a in expected_friends | {user.handle} for sid in by_author.get(a, [])),
        reverse=True,
    )
    expected = set(reachable[:timeline_max])
    timeline = [item["id"] for item in await all_pages(client, "/timeline", user, "before")]
    v.checked["timeline_entries"] += len(expected)
    dupes = len(timeline) - len(set(timeline))
    if dupes:
        v.duplicated += dupes
        v.problem("timeline duplicate", f"{user.handle} x{dupes}")
    missing = expected - set(timeline)
    if missing:
        v.lost += len(missing)
        v.problem("timeline entry lost", f"{user.handle} {len(missing)}: {sorted(missing)[:3]}")
    ours = {p.status_id for p in ledger.posts.values()}
    extra = (set(timeline) & ours) - set(reachable)
    if extra:
        v.resurrected += len(extra)
        v.problem("timeline entry not reachable", f"{user.handle} {sorted(extra)[:3]}")
