"""`python -m benchmarks load`: HTTP load against a running `timeline serve`, then a loss check.

N clients (one user each) run a mixed workload over HTTP on loopback for S seconds or until
--max-requests: read the timeline (first page, then refreshes with `after`), post statuses with
an Idempotency-Key, befriend and unfriend, delete some of their own statuses, read a friend's
statuses. Then it waits until `/health` reports no pending events and checks, for every user,
that every status acknowledged with 201 and not deleted, whose author is the user or a current
friend, is in the user's timeline (within the newest TIMELINE_MAX of them). Anything missing is
`lost`; anything there that should not be (deleted, or not a friend's) is `unexpected`.

Without --url it starts its own `timeline serve` (embedded database in a temporary directory)
and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.embedded import free_port

DEFAULT_CLIENTS = 10
DEFAULT_SECONDS = 10.0
# A hard cap on requests, so that a very fast server still makes a bounded run.
DEFAULT_MAX_REQUESTS = 200_000
# The service's default TIMELINE_MAX; pass --timeline-max when the server runs with another.
DEFAULT_TIMELINE_MAX = 1000
# How long to wait for the worker to apply every event after the load stops (a hang bound).
DRAIN_TIMEOUT_S = 600.0
# How long `timeline serve` may take to answer /health (the embedded server starts first).
SERVE_START_TIMEOUT_S = 90.0
# Per request: far above any healthy latency; a request slower than this counts as an error.
REQUEST_TIMEOUT_S = 60.0
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
}


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    by_action: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0


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
        self.stats.requests += 1
        self.stats.by_action[action] += 1
        start = time.perf_counter()
        try:
            r = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.errors[f"{action}: {type(exc).__name__}"] += 1
            return None
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


async def wait_drained(client: httpx.AsyncClient) -> float:
    start = time.monotonic()
    while True:
        r = await client.get("/health")
        if r.status_code == 200 and r.json()["pending_events"] == 0:
            return time.monotonic() - start
        if time.monotonic() - start > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"events still pending after {DRAIN_TIMEOUT_S}s: {r.text}")
        await asyncio.sleep(0.2)


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


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def drive(
    url: str, clients: int, seconds: float, max_requests: int, seed: int, timeline_max: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        stats = Stats()
        run = Run(
            client, stats, deadline=float("inf"), max_requests=max_requests, rng=random.Random(seed)
        )
        prefix = f"l{uuid.uuid4().hex[:8]}"
        run.users = list(
            await asyncio.gather(*(create_user(run, prefix, i) for i in range(clients)))
        )
        start = time.monotonic()
        run.deadline = start + seconds
        await asyncio.gather(*(client_loop(run, u) for u in run.users))
        elapsed = time.monotonic() - start
        drain_s = await wait_drained(client)
        check = await verify(run, timeline_max)
    latencies = sorted(stats.latencies_ms)
    return {
        "url": url,
        "clients": clients,
        "seconds": round(elapsed, 3),
        "requests": stats.requests,
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(stats.errors),
        "lost": check["lost"],
        "unexpected": check["unexpected"],
        "checked_pairs": check["checked_pairs"],
        "statuses_acknowledged": len(run.acknowledged) + len(run.deleted),
        "statuses_deleted": len(run.deleted),
        "req_per_s": round(stats.requests / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "drain_s": round(drain_s, 3),
        "by_action": dict(stats.by_action),
    }


@contextmanager
def own_server(data_dir: Path) -> Iterator[str]:
    """`timeline serve` on a free port with the embedded database in `data_dir`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URL"}
    env["TIMELINE_DATA_DIR"] = str(data_dir)
    log = open(data_dir / "serve.log", "ab")  # noqa: SIM115
    # cwd: the temporary directory, so that a developer's .env does not configure this server.
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=data_dir,
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"timeline serve exited with {proc.returncode}; see serve.log")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timeline serve did not answer within {SERVE_START_TIMEOUT_S}s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks load",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--url", default=None, help="a running service (default: start one)")
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="load duration")
    p.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        help="stop after this many requests even if time remains",
    )
    p.add_argument(
        "--timeline-max",
        type=int,
        default=DEFAULT_TIMELINE_MAX,
        help="the server's TIMELINE_MAX (for the loss check)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="directory for load.json")
    args = p.parse_args(argv)
    if args.clients < 2:
        p.error("--clients must be at least 2 (friendships need two users)")
    return args


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"load: {result['clients']} clients x {result['seconds']} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in (
        "requests",
        "errors",
        "lost",
        "unexpected",
        "checked_pairs",
        "statuses_acknowledged",
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "drain_s",
    ):
        table.add_row(key, str(result[key]))
    Console().print(table)
    if result["error_kinds"]:
        Console().print(f"errors: {result['error_kinds']}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def go(url: str) -> dict[str, Any]:
        return asyncio.run(
            drive(url, args.clients, args.seconds, args.max_requests, args.seed, args.timeline_max)
        )

    if args.url:
        result = go(args.url.rstrip("/"))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="timeline-load-") as tmp,
            own_server(Path(tmp)) as url,
        ):
            result = go(url)
        result["url"] = "own timeline serve (embedded database)"
    (args.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0 if result["errors"] == 0 and result["lost"] == 0 and result["unexpected"] == 0 else 1
