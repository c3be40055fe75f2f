"""`python -m benchmarks abuse`: the hostile probe of issue 25 again, against its own `timeline
serve` with the default limits (loopback, bounded loops, at most 50 connections), showing each
finding bounded.

The service runs with TRUSTED_PROXY_HOPS=1, as behind one proxy, so that the run can play many
clients: the attacker sends from one address (X-Forwarded-For), the setup and the bystanders from
others. Sections:
- sign-ups: 1,000 `POST /users` from one address (the probe: all 201, 522/s);
- friend requests: one account asks 999 others (the probe: all 201, no cap on pending requests);
- posts: one account posts 1,000 statuses of 5,000 characters (the probe: a 757-event backlog);
- reads: one token reads `GET /timeline?limit=100` on 10 connections while another user's
  `GET /me` is timed (the probe: 6 ms to a 281 ms median);
- slow clients: 50 connections trickling a request head at a byte a second, and one that sends
  nothing (the probe: all still open after 45 s);
- privacy timing: a hidden status against a missing id, a hidden user's statuses against an
  unknown handle's, SAMPLES each, interleaved (the probe: medians 2,283 against 1,632 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from bson import ObjectId

from benchmarks.services import serve_on_database
from benchmarks.stats import percentile

ATTACKER = "198.51.100.66"
SIGN_UPS = 1000
FRIEND_REQUESTS = 999
POSTS = 1000
TEXT = "x" * 5000
CONNECTIONS = 50
READ_CONNECTIONS = 10
READ_SECONDS = 5.0
SLOW_CLIENTS = 50
# The default SERVE_REQUEST_TIMEOUT_S is 15 s: every slow client must be gone some seconds after.
SLOW_WATCH_S = 20.0
SAMPLES = 1000
# A prober token may read this many times (the `reads` rule's 300 per 5 minutes, less a margin).
READS_PER_TOKEN = 250
# The bounds for the privacy timing: medians within 10 %, distributions overlapping.
MAX_MEDIAN_GAP = 0.10
REQUEST_TIMEOUT_S = 60.0


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def setup_address(i: int) -> dict[str, str]:
    """A distinct address per five users (the sign-up rule's 5 per address)."""
    n = i // 5
    return from_address(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")


async def gather_bounded(n: int, limit: int, fn: Any) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await fn(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def make_users(client: httpx.AsyncClient, prefix: str, n: int, offset: int) -> list[str]:
    async def one(i: int) -> str:
        r = await client.post(
            "/users", json={"handle": f"{prefix}{i}"}, headers=setup_address(offset + i)
        )
        r.raise_for_status()
        return str(r.json()["token"])

    return await gather_bounded(n, 20, one)


def codes(responses: list[httpx.Response]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(r.status_code for r in responses).items())}


async def sign_ups(client: httpx.AsyncClient) -> dict[str, Any]:
    start = time.monotonic()
    rs = await gather_bounded(
        SIGN_UPS,
        CONNECTIONS,
        lambda i: client.post(
            "/users", json={"handle": f"squat{i}"}, headers=from_address(ATTACKER)
        ),
    )
    return {"sent": SIGN_UPS, "seconds": round(time.monotonic() - start, 2), "codes": codes(rs)}


async def friend_spam(client: httpx.AsyncClient, attacker: str) -> dict[str, Any]:
    await make_users(client, "target", FRIEND_REQUESTS, 10_000)
    auth = {"Authorization": f"Bearer {attacker}", **from_address(ATTACKER)}
    start = time.monotonic()
    rs = await gather_bounded(
        FRIEND_REQUESTS,
        CONNECTIONS,
        lambda i: client.post("/friend-requests", json={"to": f"target{i}"}, headers=auth),
    )
    return {
        "sent": FRIEND_REQUESTS,
        "seconds": round(time.monotonic() - start, 2),
        "codes": codes(rs),
    }


async def post_spam(client: httpx.AsyncClient, attacker: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {attacker}", **from_address(ATTACKER)}
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, (await client.get("/health")).json()["pending_events"])
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    start = time.monotonic()
    rs = await gather_bounded(
        POSTS, CONNECTIONS, lambda i: client.post("/statuses", json={"text": TEXT}, headers=auth)
    )
    seconds = time.monotonic() - start
    done.set()
    await watcher
    return {
        "sent": POSTS,
        "seconds": round(seconds, 2),
        "codes": codes(rs),
        "peak_pending_events": peak,
    }


async def timed_get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    r = await client.get(path, headers=headers)
    elapsed = time.perf_counter() - start
    assert r.status_code in (200, 404), r.text
    return elapsed * 1000


async def read_flood(client: httpx.AsyncClient, tokens: list[str]) -> dict[str, Any]:
    attacker, quiet, during = tokens
    attack = {"Authorization": f"Bearer {attacker}", **from_address(ATTACKER)}

    async def victim(token: str) -> list[float]:
        auth = {"Authorization": f"Bearer {token}", **from_address("192.0.2.10")}
        return [await timed_get(client, "/me", auth) for _ in range(100)]

    alone = await victim(quiet)
    stop = time.monotonic() + READ_SECONDS
    flood: list[httpx.Response] = []

    async def reader() -> None:
        while time.monotonic() < stop:
            flood.append(await client.get("/timeline?limit=100", headers=attack))

    readers = [asyncio.create_task(reader()) for _ in range(READ_CONNECTIONS)]
    loaded = await victim(during)
    await asyncio.gather(*readers)
    return {
        "victim_me_p50_ms_alone": percentile(alone, 50),
        "victim_me_p50_ms_during": percentile(loaded, 50),
        "flood_codes": codes(flood),
    }


async def slow_clients(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    closed_at: list[float] = []
    start = time.monotonic()

    async def trickle(send: bool) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        i = 0
        while time.monotonic() - start < SLOW_WATCH_S:
            try:
                if send and i < len(head):
                    writer.write(head[i : i + 1])
                    await writer.drain()
                    i += 1
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    closed_at.append(time.monotonic() - start)
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at.append(time.monotonic() - start)
                break
        writer.close()

    tasks = [trickle(True) for _ in range(SLOW_CLIENTS)] + [trickle(False)]
    await asyncio.gather(*tasks)
    async with httpx.AsyncClient(base_url=url) as fresh:
        served = (await fresh.get("/health")).status_code
    return {
        "clients": SLOW_CLIENTS + 1,
        "closed": len(closed_at),
        "latest_close_s": round(max(closed_at, default=0.0), 1),
        "watched_s": SLOW_WATCH_S,
        "health_meanwhile": served,
    }


def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    ma, mb = percentile(a, 50) or 0.0, percentile(b, 50) or 0.0
    gap = abs(ma - mb) / min(ma, mb) if min(ma, mb) else None
    # Overlapping: neither one's slowest tenth is faster than the other's fastest tenth.
    overlap = (percentile(a, 10) or 0) <= (percentile(b, 90) or 0) and (percentile(b, 10) or 0) <= (
        percentile(a, 90) or 0
    )
    return {
        "hidden_p50_us": round(ma * 1000),
        "missing_p50_us": round(mb * 1000),
        "hidden_p10_p90_us": [round((percentile(a, p) or 0) * 1000) for p in (10, 90)],
        "missing_p10_p90_us": [round((percentile(b, p) or 0) * 1000) for p in (10, 90)],
        "median_gap": None if gap is None else round(gap, 3),
        "overlap": overlap,
        "ok": gap is not None and gap <= MAX_MEDIAN_GAP and overlap,
    }


async def privacy_timing(client: httpx.AsyncClient) -> dict[str, Any]:
    owner = (await make_users(client, "owner", 1, 50_000))[0]
    owner_auth = {"Authorization": f"Bearer {owner}", **setup_address(50_000)}
    r = await client.post("/statuses", json={"text": TEXT}, headers=owner_auth)
    hidden = r.json()["id"]
    missing = str(ObjectId())
    probers = await make_users(client, "prober", 4 * SAMPLES // READS_PER_TOKEN + 1, 60_000)
    auths = [
        {"Authorization": f"Bearer {t}", **setup_address(70_000 + 5 * i)}
        for i, t in enumerate(probers)
    ]
    pairs = (
        ("status", f"/statuses/{hidden}", f"/statuses/{missing}"),
        ("user", "/users/owner0/statuses", "/users/nobody_here/statuses"),
    )
    out: dict[str, Any] = {"samples": SAMPLES}
    n = 0
    for name, hidden_path, missing_path in pairs:
        a: list[float] = []
        b: list[float] = []
        for i in range(SAMPLES):
            auth = auths[n // READS_PER_TOKEN]
            n += 2
            first, second = (hidden_path, missing_path) if i % 2 else (missing_path, hidden_path)
            t1 = await timed_get(client, first, auth)
            t2 = await timed_get(client, second, auth)
            a.append(t1 if first == hidden_path else t2)
            b.append(t2 if first == hidden_path else t1)
        out[name] = compare(a, b)
    return out


async def drive(url: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        result: dict[str, Any] = {"sign_ups": await sign_ups(client)}
        tokens = await make_users(client, "attacker", 5, 0)
        result["friend_requests"] = await friend_spam(client, tokens[0])
        result["posts"] = await post_spam(client, tokens[1])
        result["reads"] = await read_flood(client, tokens[2:5])
        result["privacy"] = await privacy_timing(client)
    result["slow_clients"] = await slow_clients(url)
    result["ok"] = bounded(result)
    return result


def bounded(r: dict[str, Any]) -> bool:
    created = r["sign_ups"]["codes"].get("201", 0)
    requested = r["friend_requests"]["codes"].get("201", 0)
    posted = r["posts"]["codes"].get("201", 0)
    slow = r["slow_clients"]
    return bool(
        created <= 5
        and requested <= 400
        and posted <= 300
        and slow["closed"] == slow["clients"]
        and r["privacy"]["status"]["ok"]
        and r["privacy"]["user"]["ok"]
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks abuse", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="where abuse.json goes")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"RATE_LIMITS": "", "TRUSTED_PROXY_HOPS": "1"}
    with (
        tempfile.TemporaryDirectory(prefix="timeline-abuse-") as tmp,
        serve_on_database(Path(tmp), env) as (url, _),
    ):
        result = asyncio.run(drive(url))
    (args.out / "abuse.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("bounded" if result["ok"] else "NOT BOUNDED")
    return 0 if result["ok"] else 1
