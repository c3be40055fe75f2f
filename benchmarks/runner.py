"""One benchmark run: the floor, then each strategy in its own database (load, derive, measure,
sweep), the naive baseline beside the first one, and the results document."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from bson import ObjectId
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from app.storage.db import CONNECT_TIMEOUT_MS, SERVER_SELECTION_TIMEOUT_MS
from benchmarks import redis_peer, shards
from benchmarks.baselines import NaiveOnRead, measure_floor
from benchmarks.config import PAGE_LIMIT, RunConfig
from benchmarks.loader import (
    StrategyDb,
    derive,
    load_truth,
    open_strategy,
    spot_check,
    truth_size,
)
from benchmarks.measure import EXPLAIN_SAMPLE, StrategyBench, repeat, summarize_strategy
from benchmarks.monitor import CommandCounter, Window
from benchmarks.results import ReadSummary, ScalingRow
from benchmarks.stats import rounded
from benchmarks.workload import Workload, generate

# The floor's raw insert_many writes this many entries when the sweep is empty.
DEFAULT_FLOOR_ENTRIES = 1000


class Phases(Protocol):
    """Progress reporting: `start` returns the tick function of a new phase of `total` steps."""

    def start(self, label: str, total: int) -> Callable[[int], None]: ...

    def note(self, text: str) -> None: ...


async def backend_name(client: AsyncMongoClient[Any], embedded: bool) -> tuple[str, str]:
    info = await client.admin.command("buildInfo")
    if "secantusVersion" in info:
        kind = "SecantusDB (embedded)" if embedded else "SecantusDB"
        return kind, str(info["secantusVersion"])
    return "MongoDB", str(info.get("version", "?"))


def _meta(config: RunConfig, work: Workload, backend: tuple[str, str]) -> dict[str, Any]:
    return {
        "backend": backend[0],
        "backend_version": backend[1],
        "users": len(work.user_ids),
        "avg_friends": config.avg_friends,
        "friendships": len(work.friendships),
        "statuses": len(work.status_ids),
        "reads": config.reads,
        "writes": sum(op.kind not in ("read", "refresh") for op in work.ops),
        "seed": config.seed,
        "quick": config.quick,
        "sweep": list(config.sweep),
        "repeats": config.repeats,
        "timeline_max": config.timeline_max,
        "page_limit": PAGE_LIMIT,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


async def _naive(
    bench: StrategyBench, counter: CommandCounter, config: RunConfig
) -> tuple[ReadSummary, list[ScalingRow]]:
    work = bench.work
    naive = NaiveOnRead(bench.sdb.db, counter)
    readers = [work.user_ids[op.user] for op in work.ops if op.kind == "read"]
    summary = await naive.measure(readers, EXPLAIN_SAMPLE)
    rows: list[ScalingRow] = []
    for level in config.sweep:
        uid = work.user_ids[work.probes[level]]

        async def timed(_: int, uid: ObjectId = uid) -> tuple[float, Window]:
            return await naive.timed_page(uid)

        reads = await repeat(config.repeats, timed)
        ex = await naive.explain(uid)
        rows.append(ScalingRow.of("naive_on_read", level, ex, reads, "statuses"))
    return summary, rows


def add_floor_ratios(results: dict[str, Any]) -> None:
    """Each strategy against the floor: read p50 over the floor's, and in the sweep, the time
    until a post is visible over the time raw insert_many needs for one entry per receiver:
    the level's own floor, measured beside its posts, where it has one (else the run's rate)."""
    floor = results["baselines"].get("floor")
    if not floor:
        return
    base, rate = floor["read_p50_ms"], floor["insert_many_entries_per_s"]
    entries = [*results["strategies"].values(), results["baselines"].get("naive_on_read")]
    for entry in entries:
        if entry and entry["read"]["p50_ms"] and base:
            entry["vs_floor"] = {"read_p50": round(entry["read"]["p50_ms"] / base, 2)}
    for row in results["scaling"]:
        floor_ms = row.get("write_floor_ms") or (
            (row["friends"] + 1) / rate * 1000 if rate else None
        )
        row["write_floor_ms"] = rounded(floor_ms, 3)
        visible = row.get("write_visible_p50_ms")
        row["write_vs_floor"] = rounded(visible / floor_ms) if visible and floor_ms else None
        if row.get("read_p50_ms") and base:
            row["read_vs_floor"] = rounded(row["read_p50_ms"] / base)


async def _load_and_check(
    name: str, sdb: StrategyDb, work: Workload, config: RunConfig, phases: Phases
) -> dict[str, Any]:
    """Load the ground truth into a strategy's database, derive its data, and compare a sample
    of its timelines with the truth (the run's `checks.<strategy>`)."""
    await load_truth(sdb, work, config.seed, phases.start(f"{name}: load", truth_size(work)))
    await derive(sdb, work, phases.start(f"{name}: derive", len(work.status_ids)))
    phases.start(f"{name}: check against the truth", 1)
    wrong, compared = await spot_check(sdb, work, config.check_max_friends)
    if wrong:
        phases.note(f"[red]{name}: timelines differ from the truth: {', '.join(wrong)}")
    return {"timelines_differing_from_truth": wrong, "users_compared": compared}


def _client(url: str, counter: CommandCounter) -> AsyncMongoClient[Any]:
    """A client whose every command the counter sees (round trips, keys examined)."""
    return AsyncMongoClient(
        url,
        event_listeners=[counter],
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        connectTimeoutMS=CONNECT_TIMEOUT_MS,
    )


async def _floor(
    client: AsyncMongoClient[Any], counter: CommandCounter, config: RunConfig, phases: Phases
) -> dict[str, Any]:
    """The floor baseline, in its own database."""
    floor_db = f"{config.db_prefix}_floor"
    entries = max(config.sweep, default=DEFAULT_FLOOR_ENTRIES) + 1
    tick = phases.start("floor: reads and insert_many", 200 + 3)
    floor = await measure_floor(client[floor_db], counter, entries, tick)
    if not config.keep_data:
        await client.drop_database(floor_db)
    return floor


async def measure(
    name: str, bench: StrategyBench, results: dict[str, Any], phases: Phases
) -> StrategyBench:
    """The mix, storage and sweep of one loaded strategy, into `results`."""
    config, work = bench.config, bench.work
    await bench.fold_all()  # what a running service's fold pass has done since loading
    storage = await bench.storage()
    samples = await bench.run_mix(phases.start(f"{name}: mix", len(work.ops)))
    results["strategies"][name] = summarize_strategy(samples, storage).as_json()
    tick = phases.start(f"{name}: sweep", len(config.sweep))
    for level in config.sweep:
        await bench.fold_all()  # the previous level's posts, as the pass would within seconds
        results["scaling"].append((await bench.sweep_level(level)).as_json())
        tick(1)
    if config.shards:
        phases.start(f"{name}: route through {len(config.shards)} shard plans", 1)
        results.setdefault("shards", shards.new_results(config.shards))
        shards.add_strategy(results["shards"], name, samples, bench.sweep_windows)
    return bench


async def _redis_peer(
    client: AsyncMongoClient[Any],
    counter: CommandCounter,
    url: str,
    embedded: bool,
    config: RunConfig,
    work: Workload,
    phases: Phases,
    results: dict[str, Any],
) -> None:
    """Mastodon's layout beside the strategies: the same truth loaded into its own database
    (statuses and friendships, as fanout_on_read has them), feeds in a redis-server started
    for it, and the same mix and sweep."""
    name = redis_peer.NAME
    if redis_peer.redis_server_path() is None:
        phases.note(f"{name}: skipped (no redis-server on PATH; `apt-get install redis-server`)")
        results.setdefault("skipped", {})[name] = "no redis-server on PATH"
        return
    db_name = f"{config.db_prefix}_{name}"
    sdb = await open_strategy(
        client,
        counter,
        url=url,
        strategy="fanout_on_read",
        db_name=db_name,
        timeline_max=config.timeline_max,
        embedded=embedded,
    )
    with redis_peer.redis_server() as redis_url:
        redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            ctx = sdb.ctx
            strategy = redis_peer.RedisSortedSet(
                ctx.store, ctx.graph, config.timeline_max, redis, counter
            )
            strategy.empty_bytes = await strategy.used_memory()
            ctx.strategy = strategy
            results["checks"][name] = await _load_and_check(name, sdb, work, config, phases)
            await measure(name, redis_peer.PeerBench(sdb, work, config), results, phases)
        finally:
            await redis.aclose()
    if not config.keep_data:
        await client.drop_database(db_name)


async def run(config: RunConfig, url: str, *, embedded: bool, phases: Phases) -> dict[str, Any]:
    started = time.monotonic()
    counter = CommandCounter(record=bool(config.shards))
    client = _client(url, counter)
    try:
        work = generate(config)
        results: dict[str, Any] = {
            "meta": _meta(config, work, await backend_name(client, embedded)),
            "strategies": {},
            "baselines": {},
            "scaling": [],
            "checks": {},
        }
        results["baselines"]["floor"] = await _floor(client, counter, config, phases)
        for i, name in enumerate(config.strategies):
            db_name = f"{config.db_prefix}_{name}"
            await client.drop_database(db_name)
            if name == redis_peer.NAME:
                await _redis_peer(client, counter, url, embedded, config, work, phases, results)
                continue
            sdb = await open_strategy(
                client,
                counter,
                url=url,
                strategy=name,
                db_name=db_name,
                timeline_max=config.timeline_max,
                embedded=embedded,
            )
            results["checks"][name] = await _load_and_check(name, sdb, work, config, phases)
            bench = await measure(name, StrategyBench(sdb, work, config), results, phases)
            if i == 0:
                phases.start("naive_on_read baseline", 1)
                naive, rows = await _naive(bench, counter, config)
                results["baselines"]["naive_on_read"] = {"read": naive.as_json()}
                results["scaling"] += [row.as_json() for row in rows]
            if not config.keep_data:
                await client.drop_database(db_name)
        add_floor_ratios(results)
        results["meta"]["duration_s"] = round(time.monotonic() - started, 1)
        return results
    finally:
        await client.close()
