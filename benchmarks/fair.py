"""`python -m benchmarks fair`: one author posting as fast as the API accepts delays only that
author (fanout.claims serves authors in rounds, not oldest event first).

Against its own `timeline serve` (worker in-process, as `make run`; default rate limits, or none
with --no-limits; one trusted proxy hop, each user at an address of its own) on `timeline db`:
ten *light* authors (5 friends each) post once a second; a *heavy* author (20 friends) posts
5,000-character statuses on HEAVY_CONNECTIONS connections without pause, again at once after a
429. Two phases of --seconds each: the light authors
alone (unloaded), then with the heavy author (loaded). Post-to-visible lag is read from the
queue, not polled: an event's `done_at - created_at` is the time from the post's commit to its
fan-out having reached every friend. The light authors' loaded p99 must stay within
MAX_SLOWDOWN of their unloaded p99; the heavy author's own lag may grow, and is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient

from benchmarks.services import serve_on_database
from benchmarks.stats import percentile

LIGHT_AUTHORS = 10
LIGHT_FRIENDS = 5
HEAVY_FRIENDS = 20
# The heavy author's concurrent connections: enough to keep the API saturated.
HEAVY_CONNECTIONS = 8
# The probe's statuses: the longest allowed.
HEAVY_TEXT = "x" * 5000
DEFAULT_SECONDS = 20.0
# The issue's bound: the light authors' p99 under load within twice their unloaded p99.
MAX_SLOWDOWN = 2.0
# How long to wait for the light authors' last events to be applied after a phase.
SETTLE_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0


_addresses = iter(range(1, 1 << 24))


async def user(client: httpx.AsyncClient, handle: str) -> tuple[ObjectId, dict[str, str]]:
    """A new user, with the headers of its requests: its token, and an address of its own (the
    service trusts one proxy hop), as every user is another client."""
    n = next(_addresses)
    address = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
    r = await client.post("/users", json={"handle": handle}, headers=address)
    r.raise_for_status()
    data = r.json()
    return ObjectId(data["id"]), {"Authorization": f"Bearer {data['token']}", **address}


async def befriend(
    client: httpx.AsyncClient, a: dict[str, str], b: str, b_auth: dict[str, str], a_handle: str
) -> None:
    (await client.post("/friend-requests", json={"to": b}, headers=a)).raise_for_status()
    (await client.post(f"/friend-requests/{a_handle}/accept", headers=b_auth)).raise_for_status()


async def author_with_friends(
    client: httpx.AsyncClient, handle: str, friends: int
) -> tuple[ObjectId, dict[str, str]]:
    author_id, auth = await user(client, handle)
    for i in range(friends):
        friend = f"{handle}_f{i}"
        _, friend_auth = await user(client, friend)
        await befriend(client, auth, friend, friend_auth, handle)
    return author_id, auth


async def light_loop(
    client: httpx.AsyncClient, auth: dict[str, str], seconds: float, offset: float
) -> None:
    """A post every second, `offset` seconds into each (the ten authors spread over it)."""
    start = time.monotonic() + offset
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        await asyncio.sleep(max(0.0, n - elapsed))
        r = await client.post("/statuses", json={"text": f"light {n}"}, headers=auth)
        r.raise_for_status()
        n += 1


async def heavy_loop(client: httpx.AsyncClient, auth: dict[str, str], stop: asyncio.Event) -> int:
    """Post until `stop`, at once again after a 429 too (a hostile client); returns how many
    posts were accepted."""
    posted = 0
    while not stop.is_set():
        r = await client.post("/statuses", json={"text": HEAVY_TEXT}, headers=auth)
        if r.status_code != 429:
            r.raise_for_status()
            posted += 1
    return posted


async def lags_ms(
    events: Any, authors: list[ObjectId], since: datetime, settle: bool
) -> tuple[list[float], int, list[float]]:
    """(post-to-visible lag of the applied `status_posted` events of `authors` recorded since
    `since`, how many are still waiting, the part of each lag spent waiting to be claimed);
    with `settle`, first wait until none is waiting."""
    flt = {"kind": "status_posted", "author_id": {"$in": authors}, "created_at": {"$gte": since}}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while settle and await events.count_documents({**flt, "state": {"$ne": "done"}}):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    fields = {"created_at": 1, "started_at": 1, "done_at": 1, "state": 1}
    docs = await events.find(flt, fields).to_list()
    done = [d for d in docs if d["state"] == "done"]
    lags = [(d["done_at"] - d["created_at"]).total_seconds() * 1000 for d in done]
    waits = [(d["started_at"] - d["created_at"]).total_seconds() * 1000 for d in done]
    return lags, len(docs) - len(done), waits


def summary(lags: list[float], waiting: int, waits: list[float]) -> dict[str, Any]:
    return {
        "posts": len(lags) + waiting,
        "waiting": waiting,
        "p50_ms": percentile(lags, 50),
        "p99_ms": percentile(lags, 99),
        "max_ms": max(lags, default=None),
        # Of the lag, the wait until a worker claimed the event (the rest is applying it).
        "claim_wait_p50_ms": percentile(waits, 50),
        "claim_wait_p99_ms": percentile(waits, 99),
    }


async def drive(url: str, mongodb_url: str, seconds: float) -> dict[str, Any]:
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongodb_url)
    events = mongo["timeline"]["events"]
    limits = httpx.Limits(max_connections=HEAVY_CONNECTIONS + LIGHT_AUTHORS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        lights = [
            await author_with_friends(client, f"light{i}", LIGHT_FRIENDS)
            for i in range(LIGHT_AUTHORS)
        ]
        heavy_id, heavy_auth = await author_with_friends(client, "heavy", HEAVY_FRIENDS)
        light_ids = [a for a, _ in lights]
        result: dict[str, Any] = {"seconds": seconds}

        since = datetime.now().astimezone()
        await asyncio.gather(
            *(
                light_loop(client, auth, seconds, i / LIGHT_AUTHORS)
                for i, (_, auth) in enumerate(lights)
            )
        )
        result["unloaded"] = summary(*await lags_ms(events, light_ids, since, settle=True))

        since = datetime.now().astimezone()
        stop = asyncio.Event()
        heavy = [
            asyncio.create_task(heavy_loop(client, heavy_auth, stop))
            for _ in range(HEAVY_CONNECTIONS)
        ]
        await asyncio.gather(
            *(
                light_loop(client, auth, seconds, i / LIGHT_AUTHORS)
                for i, (_, auth) in enumerate(lights)
            )
        )
        stop.set()
        posted = sum(await asyncio.gather(*heavy))
        result["loaded"] = summary(*await lags_ms(events, light_ids, since, settle=True))
        heavy_lags = await lags_ms(events, [heavy_id], since, settle=False)
        result["heavy"] = {**summary(*heavy_lags), "accepted_per_s": posted / seconds}
        result["health"] = (await client.get("/health")).json()
    await mongo.close()
    unloaded, loaded = result["unloaded"]["p99_ms"], result["loaded"]["p99_ms"]
    result["slowdown_p99"] = loaded / unloaded if unloaded and loaded else None
    result["ok"] = result["slowdown_p99"] is not None and result["slowdown_p99"] <= MAX_SLOWDOWN
    return result


def print_table(r: dict[str, Any]) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    print(f"post-to-visible lag, ms ({r['seconds']:.0f} s per phase)")
    print(
        f"{'':28} {'posts':>7} {'p50':>9} {'p99':>9} {'max':>9} {'waiting':>8}"
        f" {'claim wait p50':>15} {'p99':>9}"
    )
    for label, key in (
        ("light authors, unloaded", "unloaded"),
        ("light authors, loaded", "loaded"),
        ("heavy author (loaded)", "heavy"),
    ):
        s = r[key]
        print(
            f"{label:28} {s['posts']:>7} {fmt(s['p50_ms']):>9} {fmt(s['p99_ms']):>9} "
            f"{fmt(s['max_ms']):>9} {s['waiting']:>8}"
        )
    print(f"heavy author: {r['heavy']['accepted_per_s']:.1f} posts/s accepted ({r['limits']})")
    verdict = "ok" if r["ok"] else "OVER"
    print(
        f"light p99 loaded / unloaded: {fmt(r['slowdown_p99'])}x (bound {MAX_SLOWDOWN}x): {verdict}"
    )
    print(f"/health backlog_authors: {r['health'].get('backlog_authors')}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks fair", description=__doc__)
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each phase")
    p.add_argument(
        "--no-limits",
        action="store_true",
        help="rate limits off: the heavy author's posts are all accepted (a capacity test)",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="where fair.json goes")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"RATE_LIMITS": "off" if args.no_limits else "", "TRUSTED_PROXY_HOPS": "1"}
    with (
        tempfile.TemporaryDirectory(prefix="timeline-fair-") as tmp,
        serve_on_database(Path(tmp), env) as (url, mongodb_url),
    ):
        result = asyncio.run(drive(url, mongodb_url, args.seconds))
    result["limits"] = env["RATE_LIMITS"] or "default limits"
    (args.out / "fair.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    return 0 if result["ok"] else 1
