"""`python -m benchmarks soak`: hours of a deployment in minutes: steady traffic, faults on a
schedule, and at the end the proof that nothing acknowledged was lost or applied twice.

It starts `timeline db` (the embedded database), `timeline serve --no-worker` and W `timeline
worker` processes in a temporary directory, as a deployment runs them, and drives a seeded,
open-loop mix at R operations a second for N minutes on loopback (benchmarks/soak_traffic.py),
bounded by --max-ops. Faults are injected on a schedule (benchmarks/soak_faults.py). Every 10 s
it records each process's RSS, the data directory's bytes, documents per collection (every
30 s; their bytes at the first and the final sample), events by state, the backlog,
post-to-visible lag and API latency in that window (benchmarks/soak_sampler.py). At the end:
the drain, `timeline check` over every user, and the ledger check of every acknowledged write
(benchmarks/soak_ledger.py). It writes soak.json, the plots and report.md to --out
(benchmarks/soak_report.py) and exits 1 if an invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient

from app.settings import Settings
from app.storage.models import DONE_EVENT_TTL_SECONDS, IDEMPOTENCY_TTL_SECONDS
from benchmarks.probe import Probe
from benchmarks.soak_cluster import Cluster
from benchmarks.soak_faults import Fault, run_faults
from benchmarks.soak_ledger import Verdict, settle, verify
from benchmarks.soak_report import summarize, write_report
from benchmarks.soak_sampler import Sampler
from benchmarks.soak_traffic import MAX_IN_FLIGHT, REQUEST_TIMEOUT_S, Away, Traffic

DEFAULT_RATE = 20.0
DEFAULT_USERS = 100
DEFAULT_WORKERS = 2
# After the load, the worker must apply every event within this (a hang bound, not a target).
DRAIN_TIMEOUT_S = 1800.0
# The probe of post-to-visible lag, lighter than `benchmarks load`'s (a post every 0.5 s, a
# look every 0.1 s, which at a soak's low rate would be most of the traffic): a post a second,
# a look every quarter second (the lag's resolution, well under the 2 s target).
PROBE_EVERY_S = 1.0
PROBE_POLL_S = 0.25
# `timeline check` over every user: far above its ~1 s per 100 users here.
CHECK_TIMEOUT_S = 900.0
# The expiry probe: this many applied events and as many idempotency keys, written into the
# service's own collections at set-up already past their keep time (events marked `soak_probe`,
# keys by EXPIRY_PROBE_KEY), which the workers' housekeeping (fanout.housekeeping, once a
# minute) must have removed by the end. Nobody reads them: the events are done, the keys
# belong to no user.
EXPIRY_PROBE_DOCS = 100
EXPIRY_PROBE_KEY = "soak-expiry-probe"
# What the housekeeping may still hold past its keep time at the end: a pass runs every 60 s
# (plus up to 20 % jitter) and may be under way.
EXPIRY_SLACK_S = 120


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks soak",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--minutes", type=float, required=True, help="load duration")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="operations per second")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker processes")
    p.add_argument("--users", type=int, default=DEFAULT_USERS, help="users in the mix")
    p.add_argument("--seed", type=int, default=1, help="random seed of the mix")
    p.add_argument("--strategy", default="receiver_copies", help="TIMELINE_STRATEGY")
    p.add_argument(
        "--max-ops", type=int, default=None, help="stop after this many operations (default: 2x)"
    )
    p.add_argument("--no-faults", action="store_true", help="steady traffic only")
    p.add_argument("--out", type=Path, required=True, help="directory for soak.json and plots")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        p.error("--minutes and --rate must be more than 0")
    if args.workers < 1:
        p.error("--workers must be at least 1 (the soak kills and restarts them)")
    if args.users < 4:
        p.error("--users must be at least 4")
    return args


async def _probe(client: httpx.AsyncClient, prefix: str) -> Probe:
    """benchmarks/probe.py's two users, friends, outside the mix."""
    tokens = []
    for who in ("author", "reader"):
        r = await client.post("/users", json={"handle": f"{prefix}_{who}"})
        r.raise_for_status()
        tokens.append(r.json()["token"])
    author, reader = ({"Authorization": f"Bearer {t}"} for t in tokens)
    r = await client.post("/friend-requests", json={"to": f"{prefix}_reader"}, headers=author)
    r.raise_for_status()
    r = await client.post(f"/friend-requests/{prefix}_author/accept", headers=reader)
    r.raise_for_status()
    return Probe(author, reader, every_s=PROBE_EVERY_S, poll_s=PROBE_POLL_S)


async def _probe_posts(
    probe: Probe, traffic: Traffic, deadline: float, stop: asyncio.Event
) -> None:
    """benchmarks.probe's posting loop, ending early with `stop` too."""
    sent: list[asyncio.Task[None]] = []
    while time.monotonic() < deadline and not stop.is_set():
        sent.append(asyncio.create_task(probe.post_one(traffic.probe_call)))
        try:
            await asyncio.wait_for(stop.wait(), probe.every_s)
        except TimeoutError:
            pass
    await asyncio.gather(*sent)
    probe.posting = False


async def _drained(client: httpx.AsyncClient) -> float:
    start = time.monotonic()
    while time.monotonic() - start < DRAIN_TIMEOUT_S:
        try:
            r = await client.get("/health")
            if r.status_code == 200 and r.json()["pending_events"] == 0:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"events still pending after {DRAIN_TIMEOUT_S}s")


async def _expiry_probe_start(mongo: AsyncMongoClient[dict[str, Any]], db_name: str) -> None:
    db = mongo[db_name]
    now = datetime.now(UTC)
    done_at = now - timedelta(seconds=DONE_EVENT_TTL_SECONDS + 60)
    created_at = now - timedelta(seconds=IDEMPOTENCY_TTL_SECONDS + 60)
    await db.events.insert_many(
        [
            {
                "kind": "status_posted",
                "author_id": ObjectId(),
                "state": "done",
                "attempts": 1,
                "created_at": done_at,
                "done_at": done_at,
                "soak_probe": True,
            }
            for _ in range(EXPIRY_PROBE_DOCS)
        ]
    )
    await db.idempotency_keys.insert_many(
        [
            {
                "user_id": ObjectId(),
                "key": EXPIRY_PROBE_KEY,
                "body_hash": "",
                "state": "done",
                "created_at": created_at,
            }
            for _ in range(EXPIRY_PROBE_DOCS)
        ]
    )


async def _expiry(mongo: AsyncMongoClient[dict[str, Any]], db_name: str) -> dict[str, Any]:
    """What the housekeeping should have removed by now, and what is still there; the TTL
    indexes left in the service's database (none: the embedded server's monitor scans every
    document kept under one)."""
    db = mongo[db_name]
    now = datetime.now(UTC)
    done_cutoff = now - timedelta(seconds=DONE_EVENT_TTL_SECONDS + EXPIRY_SLACK_S)
    key_cutoff = now - timedelta(seconds=IDEMPOTENCY_TTL_SECONDS + EXPIRY_SLACK_S)
    ttl_indexes = [
        f"{name}.{index}"
        for name in await db.list_collection_names()
        for index, spec in (await db[name].index_information()).items()
        if "expireAfterSeconds" in spec
    ]
    return {
        "done_events_past_ttl": await db.events.count_documents(
            {"state": "done", "done_at": {"$lt": done_cutoff}}
        ),
        "idempotency_keys_past_ttl": await db.idempotency_keys.count_documents(
            {"created_at": {"$lt": key_cutoff}}
        ),
        "expiry_probe_inserted": EXPIRY_PROBE_DOCS,
        "expiry_probe_events_left": await db.events.count_documents({"soak_probe": True}),
        "expiry_probe_keys_left": await db.idempotency_keys.count_documents(
            {"key": EXPIRY_PROBE_KEY}
        ),
        "ttl_indexes": ttl_indexes,
    }


def _timeline_check(cluster: Cluster) -> dict[str, Any]:
    env = cluster.env()
    proc = subprocess.run(
        [sys.executable, "-m", "entrypoints", "check"],
        cwd=cluster.data_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
    )
    return {"exit_code": proc.returncode, "output_tail": proc.stdout.strip().splitlines()[-5:]}


@dataclass
class _Load:
    """What the load phase leaves for the result: its timing, samples, faults and early stop."""

    started: float  # monotonic, when the load began (the zero of samples, faults and failures)
    load_s: float
    drain_s: float
    sampler: Sampler
    faults: list[Fault]
    # The event itself, not whether it was set: the result reads it at the very end, as before.
    stop_early: asyncio.Event


async def drive(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """The whole run against a started `cluster`: setup, the load with its faults, the drain,
    the ledger check, the expiry and `timeline check`; returns soak.json's content (without
    the summary)."""
    settings = Settings()
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT + 16, max_keepalive_connections=64)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        cluster.mongodb_url, serverSelectionTimeoutMS=2000
    )
    async with httpx.AsyncClient(
        base_url=cluster.url, limits=limits, timeout=httpx.Timeout(REQUEST_TIMEOUT_S)
    ) as client:
        traffic = Traffic(client, random.Random(args.seed))
        started_at = datetime.now(UTC)  # the run's start, for soak.json's `meta`
        setup_start = time.monotonic()
        probe = await _set_up(client, mongo, traffic, args.users, settings.mongodb_db)
        setup_s = time.monotonic() - setup_start
        traffic.away = Away(mongo, settings.mongodb_db, settings.timeline_active_days)
        load = await _load(cluster, args, traffic, probe, mongo, settings)
        await settle(client, traffic.ledger)
        await _drained(client)  # the settling posts' events
        verdict: Verdict = await verify(client, traffic.ledger, settings.timeline_max)
        verdict.lost += probe.unseen
        expiry = await _expiry(mongo, settings.mongodb_db)
    await mongo.close()
    check = await asyncio.to_thread(_timeline_check, cluster)
    return {
        "meta": _meta(args, setup_s, load, started_at),
        "samples": load.sampler.samples,
        "faults": [f.as_dict() for f in load.faults],
        "failures": [(round(s.at - load.started, 2), s.code) for s in traffic.failures],
        "ops": dict(traffic.ops),
        "shed": traffic.shed,
        "returns": traffic.returns,
        "away_aged": traffic.away.aged,
        "drain_s": round(load.drain_s, 2),
        "probe_unseen": probe.unseen,
        "idempotent_retries_checked": traffic.ledger.retries_checked,
        "verdict": {
            "lost": verdict.lost,
            "duplicated": verdict.duplicated,
            "resurrected": verdict.resurrected,
            "checked": dict(verdict.checked),
            "problems": verdict.problems,
        },
        "check": check,
        "expiry": expiry,
        "acknowledged_posts": len(traffic.ledger.acknowledged_posts()),
        "acknowledged_deletes": len(traffic.ledger.deleted),
    }


async def _set_up(
    client: httpx.AsyncClient,
    mongo: AsyncMongoClient[dict[str, Any]],
    traffic: Traffic,
    users: int,
    db_name: str,
) -> Probe:
    """The mix's `users` and their first friendships, the lag probe's two users and the expiry
    probe's documents; returns the lag probe."""
    prefix = f"s{uuid.uuid4().hex[:6]}"
    await traffic.create_users(prefix, users)
    await traffic.befriend_initial()
    probe = await _probe(client, f"{prefix}p")
    await _expiry_probe_start(mongo, db_name)
    return probe


async def _load(
    cluster: Cluster,
    args: argparse.Namespace,
    traffic: Traffic,
    probe: Probe,
    mongo: AsyncMongoClient[dict[str, Any]],
    settings: Settings,
) -> _Load:
    """The load for --minutes (or until SIGUSR1) with the faults, the sampler and the probe,
    then the drain; on return the faults are over, every event is applied, the probe has had
    its last look and the sampler has stopped."""
    seconds = args.minutes * 60
    started = time.monotonic()
    sampler = Sampler(cluster, traffic, probe, mongo, settings.mongodb_db, started)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    # SIGUSR1 ends the load early, then drains and checks as at the end of a full run (a
    # run that has to end before its time still reports what it measured).
    stop_early = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop_early.set)
    faults: list[Fault] = []
    faulting = None
    if not args.no_faults:
        faulting = asyncio.create_task(
            run_faults(cluster, started, seconds, args.workers, faults, stop_early)
        )
    polling = asyncio.create_task(probe.poll(traffic.probe_call))
    max_ops = args.max_ops or int(args.rate * seconds * 2)
    await asyncio.gather(
        traffic.run(args.rate, seconds, max_ops, stop_early),
        _probe_posts(probe, traffic, started + seconds, stop_early),
    )
    load_s = time.monotonic() - started
    if faulting is not None:
        await faulting
    await asyncio.gather(*traffic.returning)
    drain_s = await _drained(traffic.client)
    await probe.look(traffic.probe_call)
    probe.posting = False
    try:
        await asyncio.wait_for(polling, timeout=REQUEST_TIMEOUT_S)
    except TimeoutError:
        polling.cancel()
    stop_sampling.set()
    await sampling
    return _Load(started, load_s, drain_s, sampler, faults, stop_early)


def _meta(
    args: argparse.Namespace, setup_s: float, load: _Load, started_at: datetime
) -> dict[str, Any]:
    """soak.json's `meta`: the run's settings, when it started (before the set-up; it was the
    time of writing, the run's end, before), how long setup and load took, and how it ran."""
    return {
        "minutes": args.minutes,
        "rate": args.rate,
        "workers": args.workers,
        "users": args.users,
        "seed": args.seed,
        "strategy": args.strategy,
        "setup_s": round(setup_s, 1),
        "load_s": round(load.load_s, 1),
        "ended_early": load.stop_early.is_set(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": "python -m benchmarks soak " + " ".join(sys.argv[2:]),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="timeline-soak-") as tmp:
        cluster = Cluster(Path(tmp), args.workers, args.strategy)
        try:
            cluster.start()
            result = asyncio.run(drive(cluster, args))
        finally:
            cluster.stop()
            log = Path(tmp) / "serve.log"
            if log.exists():
                (args.out / "soak-serve.log.tail").write_bytes(log.read_bytes()[-200_000:])
    result["summary"] = summarize(result)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    write_report(result, args.out)
    print(json.dumps(result["summary"], indent=2))
    return 0 if result["summary"]["ok"] else 1
