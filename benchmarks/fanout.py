"""`python -m benchmarks fanout`: how long one post of an author with N friends takes to be
visible to all of them, per materialized strategy, against the floor of raw `insert_many` of the
same number of entries, in one run on one backend (issue 23, docs/benchmarks.md "Fan-out
throughput").

Per strategy (receiver_copies, hybrid with HYBRID_THRESHOLD at its maximum so that the author is
a small one and is fanned out, inbox_buckets), in its own database: the author and N friends,
then `--repeat` times, alternating: a post as the API makes it (`app.domain.statuses.post`)
followed by
`Worker.drain()` (claim with the author and event leases, the friend list, the writes, the
checkpoints, marking the event done: the worker's own bookkeeping counted), timed from before the
post until the drain returns (*visible*), and checked on a sample of friends; then one unordered
`insert_many` of N + 1 ready-made entries (the friends' and the author's own) into a scratch
collection with the same indexes as `timeline_entries` (the *floor*). The ratio is the median
visible time over the median floor (the target: 1.3); each pair's ratio gives the spread.

With `--profile` (default receiver_copies), one more fan-out of that strategy, not in the ratios:
every command's time as the driver saw it (a CommandListener), the CPU of this process and of the
embedded server, and a cProfile of a further one to split this process's CPU into the driver
(pymongo, bson), our code (app, fanout) and the rest (asyncio, the standard library).

The top-level `worker_*`, `raw_insert_many_*` and `ratio` fields are receiver_copies' worker
throughput against the floor's (entries per second, as before issue 23).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import statistics
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import monitoring

from app.context import AppContext, build_context
from app.domain.statuses import post
from app.domain.users import Account, hash_token, new_user_doc
from app.settings import load_settings
from app.storage.db import connect
from app.storage.models import utcnow
from app.strategies.materialized import FANOUT_BATCH
from benchmarks.backend import run_and_write
from benchmarks.baselines import raw_insert_many
from fanout.worker import Worker

DEFAULT_FRIENDS = 5000
# Timings on a shared machine wobble; the median of a few alternating runs is steadier.
DEFAULT_REPEAT = 3
# A status of typical length (a few hundred bytes of BSON per copy, like the real service).
TEXT = "a status of typical length, " * 6
MATERIALIZED = ("receiver_copies", "hybrid", "inbox_buckets")
# HYBRID_THRESHOLD's maximum: an author with up to this many friends is a small one, fanned out
# as receiver_copies does (the default 1000 would make a 5,000-friend author a large one).
HYBRID_SMALL_UP_TO = 5000
# Friends whose first page is read to check that the post is visible to them.
CHECKED_FRIENDS = 5
# The target: visible within this multiple of the floor.
TARGET_RATIO = 1.3
# What the profile attributes to the driver and to our code (by the source file's path).
DRIVER_PATHS = ("/pymongo/", "/bson/")
OUR_PATHS = ("/app/", "/fanout/")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks fanout",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--friends", type=int, default=DEFAULT_FRIENDS, help="N (default 5000)")
    p.add_argument(
        "--mongodb-url", default=None, help="a MongoDB to measure (default: the embedded server)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"posts fanned out per strategy, alternating with raw inserts; medians are "
        f"reported (default {DEFAULT_REPEAT})",
    )
    p.add_argument("--strategies", default=",".join(MATERIALIZED), help="(default: all three)")
    p.add_argument(
        "--profile",
        default="receiver_copies",
        help="the strategy whose fan-out is profiled ('none': no profile)",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for fanout.json")
    args = p.parse_args(argv)
    if args.friends < 1 or args.repeat < 1:
        p.error("--friends and --repeat must be at least 1")
    if args.friends > HYBRID_SMALL_UP_TO:
        p.error(f"--friends: at most {HYBRID_SMALL_UP_TO} (hybrid's small authors)")
    args.strategies = [n for n in args.strategies.split(",") if n]
    if not args.strategies or set(args.strategies) - set(MATERIALIZED):
        p.error(f"--strategies: choose from {', '.join(MATERIALIZED)}")
    if args.profile not in (*args.strategies, "none"):
        p.error("--profile: one of --strategies, or none")
    return args


@dataclass
class Timed(monitoring.CommandListener):
    """Every command's duration as the driver reports it (sent to reply decoded), while `on`."""

    on: bool = False
    ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _names: dict[int, str] = field(default_factory=dict)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on:
            name = event.command_name
            target = event.command.get("collection") if name == "getMore" else event.command[name]
            self._names[event.request_id] = f"{name} {target}"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def _done(self, request_id: int, micros: int) -> None:
        name = self._names.pop(request_id, None)
        if name is not None:
            self.ms[name] += micros / 1000
            self.count[name] += 1


TIMED = Timed()


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _author_with_friends(ctx: AppContext, n: int) -> Account:
    now = utcnow()
    doc = new_user_doc("author", None, hash_token(secrets.token_hex(16)))
    doc["friend_count"] = n
    await ctx.store.users.insert_one(doc)
    author = Account.from_doc(doc)
    friends = [
        new_user_doc(f"f{i}", None, hash_token(secrets.token_hex(16))) | {"friend_count": 1}
        for i in range(n)
    ]
    await ctx.store.users.insert_many(friends)
    edges = [{"user_id": author.id, "friend_id": f["_id"], "since": now} for f in friends]
    edges += [{"user_id": f["_id"], "friend_id": author.id, "since": now} for f in friends]
    await ctx.store.friendships.insert_many(edges)
    return author


@dataclass
class Run:
    """One post made visible: the API's part (the post's transaction) and the whole."""

    api_s: float
    visible_s: float
    worker_s: float


async def _visible(ctx: AppContext, author: Account) -> tuple[Run, str]:
    """One post, then the worker until drained; the run and the status id."""
    start = time.perf_counter()
    status, _ = await post(ctx, author, TEXT, None)
    posted = time.perf_counter()
    worker = Worker(ctx, name="bench")
    applied = await worker.drain()
    visible = time.perf_counter()
    await worker.release_leases()
    assert applied >= 1, "the worker found no event to apply"
    return Run(posted - start, visible - start, visible - posted), str(status["id"])


async def _check(ctx: AppContext, friends: list[ObjectId], status_id: str) -> None:
    """The status heads the first page of CHECKED_FRIENDS friends, spread over the list."""
    step = max(1, len(friends) // CHECKED_FRIENDS)
    for friend in friends[::step][:CHECKED_FRIENDS]:
        page = await ctx.strategy.read(friend, limit=1)
        assert [str(v.id) for v in page.items] == [status_id], "not visible to a friend"


async def _fan_out(ctx: AppContext, author: Account, friends: list[ObjectId]) -> Run:
    run, status_id = await _visible(ctx, author)
    await _check(ctx, friends, status_id)
    return run


async def _profile(
    ctx: AppContext, author: Account, friends: list[ObjectId], db_pid: int | None
) -> dict[str, Any]:
    """Where one fan-out's time goes (the module docstring)."""
    TIMED.ms.clear()
    TIMED.count.clear()
    cpu_db, cpu_me = _cpu_s(db_pid), time.process_time()
    TIMED.on = True
    try:
        run, status_id = await _visible(ctx, author)
    finally:
        TIMED.on = False
    cpu_db, cpu_me = _cpu_s(db_pid) - cpu_db, time.process_time() - cpu_me
    await _check(ctx, friends, status_id)
    commands = sorted(TIMED.ms.items(), key=lambda kv: -kv[1])
    in_commands = sum(TIMED.ms.values()) / 1000
    profiler = cProfile.Profile()
    profiler.enable()
    _, status_id = await _visible(ctx, author)
    profiler.disable()
    await _check(ctx, friends, status_id)
    split = _split(pstats.Stats(profiler))
    total = sum(split.values()) or 1.0
    return {
        "visible_s": round(run.visible_s, 3),
        "api_s": round(run.api_s, 3),
        "worker_s": round(run.worker_s, 3),
        "commands": [
            {"command": name, "count": TIMED.count[name], "ms": round(ms, 1)}
            for name, ms in commands
        ],
        "seconds_in_commands": round(in_commands, 3),
        "seconds_between_commands": round(run.visible_s - in_commands, 3),
        "database_cpu_s": round(cpu_db, 3) if db_pid is not None else None,
        "this_process_cpu_s": round(cpu_me, 3),
        # The cProfile of a further fan-out: shares of this process's own time (tottime).
        "this_process_cpu_share": {k: round(v / total, 3) for k, v in split.items()},
    }


def _split(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) by where the function lives: the driver, our code, or the rest. Time
    blocked in the event loop's poll (waiting for the database) is left out."""
    out = {"driver": 0.0, "our_code": 0.0, "rest": 0.0}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, _, name), (_, _, tottime, _, _) in raw.items():
        if name == "<method 'poll' of 'select.epoll' objects>":
            continue
        if any(p in path for p in DRIVER_PATHS):
            out["driver"] += tottime
        elif any(p in path for p in OUR_PATHS) and "site-packages" not in path:
            out["our_code"] += tottime
        else:
            out["rest"] += tottime
    return out


async def _strategy(url: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(
        _env_file=None,
        mongodb_url=url,
        mongodb_db=f"bench_fanout_{uuid.uuid4().hex[:8]}",
        timeline_strategy=name,
        hybrid_threshold=HYBRID_SMALL_UP_TO,
    )
    database = await connect(url, settings.mongodb_db, embedded=args.embedded)
    runs: list[Run] = []
    floor: list[float] = []
    profile = None
    try:
        ctx = await build_context(settings, database)
        author = await _author_with_friends(ctx, args.friends)
        friends = [
            u["_id"] async for u in ctx.store.users.find({"_id": {"$ne": author.id}}, {"_id": 1})
        ]
        like = await ctx.store.statuses.find_one({}) or {
            "_id": ObjectId(),
            "author_id": author.id,
            "author": author.handle,
            "text": TEXT,
            "created_at": utcnow(),
        }
        # Alternate the two so that a busy machine slows both alike; report medians.
        for _ in range(args.repeat):
            runs.append(await _fan_out(ctx, author, friends))
            floor.append(await raw_insert_many(database.db, [author.id, *friends], like))
        if args.profile == name:
            profile = await _profile(ctx, author, friends, args.server_pid)
    finally:
        await database.client.drop_database(settings.mongodb_db)
        await database.close()
    visible = statistics.median(r.visible_s for r in runs)
    floor_s = statistics.median(floor)
    paired = [r.visible_s / f for r, f in zip(runs, floor, strict=True)]
    out: dict[str, Any] = {
        "entries": args.friends + 1,
        "visible_seconds": [round(r.visible_s, 4) for r in runs],
        "api_seconds": [round(r.api_s, 4) for r in runs],
        "worker_seconds": [round(r.worker_s, 4) for r in runs],
        "floor_seconds": [round(f, 4) for f in floor],
        "ratio": round(visible / floor_s, 3),
        "ratio_per_pair": {"min": round(min(paired), 3), "max": round(max(paired), 3)},
        "target_ratio": TARGET_RATIO,
    }
    if profile is not None:
        out["profile"] = profile
    return out


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    monitoring.register(TIMED)  # before any client: PyMongo's listeners are global
    strategies = {name: await _strategy(url, name, args) for name in args.strategies}
    database = await connect(url, f"bench_fanout_{uuid.uuid4().hex[:8]}", embedded=args.embedded)
    try:
        info = await database.client.admin.command("buildInfo")
    finally:
        await database.close()
    result: dict[str, Any] = {
        "friends": args.friends,
        "backend": "embedded" if args.embedded else "mongodb",
        "server_version": info.get("version"),
        "fanout_batch": FANOUT_BATCH,
        "repeat": args.repeat,
    }
    copies = strategies.get("receiver_copies")
    if copies is not None:
        worker_rate = (args.friends + 1) / statistics.median(copies["worker_seconds"])
        raw_rate = (args.friends + 1) / statistics.median(copies["floor_seconds"])
        result |= {
            "worker_seconds": copies["worker_seconds"],
            "raw_insert_many_seconds": copies["floor_seconds"],
            "worker_entries_per_s": round(worker_rate, 1),
            "raw_insert_many_entries_per_s": round(raw_rate, 1),
            "ratio": round(worker_rate / raw_rate, 3),
        }
    result["strategies"] = strategies
    return result


def main(argv: list[str]) -> int:
    run_and_write(parse_args(argv), measure, "fanout.json")
    return 0
