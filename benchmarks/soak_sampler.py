"""What a soak run records every SAMPLE_EVERY_S: memory of each process, storage, the backlog,
freshness and API latency in that window (benchmarks/soak.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from benchmarks.probe import Probe
from benchmarks.soak_cluster import Cluster, dir_bytes, health, rss_bytes
from benchmarks.soak_traffic import Traffic
from benchmarks.stats import percentile

# The issue asks for a sample every 10 s.
SAMPLE_EVERY_S = 10.0
# collStats of every collection costs the embedded server a walk of every index (about 13 % of
# its busy time in a soak at 8 ops/s when taken every 10 s): documents and bytes per collection
# are taken every this many samples (every 30 s), and carried in between.
COLLSTATS_EVERY = 3
# A sample's database reads give up after this (the database may be restarting).
SAMPLE_DB_TIMEOUT_S = 5.0
EVENT_STATES = ("staged", "pending", "dead")


def _pct(values: list[float], p: float) -> float | None:
    value = percentile(values, p)
    return None if value is None else round(value, 1)


@dataclass
class Sampler:
    cluster: Cluster
    traffic: Traffic
    probe: Probe
    mongo: AsyncMongoClient[dict[str, Any]]
    db_name: str
    started: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    _lag_seen: int = 0
    _last_collections: dict[str, Any] | None = None

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                await asyncio.wait_for(until.wait(), SAMPLE_EVERY_S)
            except TimeoutError:
                pass
            self.samples.append(await self.sample())

    async def collections(self) -> dict[str, Any]:
        """Documents and bytes per collection, and events by state (None while unreachable)."""
        db = self.mongo[self.db_name]
        try:
            with pymongo.timeout(SAMPLE_DB_TIMEOUT_S):
                out: dict[str, Any] = {}
                fresh = self._last_collections is None or len(self.samples) % COLLSTATS_EVERY == 0
                names = sorted(await db.list_collection_names()) if fresh else []
                for name in names:
                    stats = await db.command("collStats", name)
                    out[name] = {
                        "docs": int(stats.get("count", 0)),
                        "bytes": int(stats.get("size", 0)),
                        "index_bytes": int(stats.get("totalIndexSize", 0)),
                    }
                if not fresh and self._last_collections is not None:
                    out = self._last_collections
                self._last_collections = out
                # Counted on the (state, _id) index for the few not-done ones; `done` is the
                # rest of collStats' count: counting it would decode every done event on the
                # embedded server (its count walks the documents), a cost the service would
                # then pay every 10 s for our measurement.
                events: dict[str, int | None] = {
                    s: await db.events.count_documents({"state": s}) for s in EVENT_STATES
                }
                done = out.get("events", {}).get("docs", 0) - sum(n or 0 for n in events.values())
                events["done"] = done if fresh else None
                return {"collections": out, "collections_fresh": fresh, "events_by_state": events}
        except PyMongoError:
            return {"collections": None, "events_by_state": None}

    async def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        taken, self.traffic.samples = self.traffic.samples, []
        lags = [x * 1000 for x in self.probe.lags_s[self._lag_seen :]]
        self._lag_seen = len(self.probe.lags_s)
        latencies = [s.ms for s in taken if s.code not in ("transport", "timeout")]
        codes = Counter(s.code for s in taken)
        backlog = await asyncio.to_thread(health, self.cluster.url)
        return {
            "t_s": round(now - self.started, 1),
            "rss_bytes": {role: rss_bytes(pid) for role, pid in self.cluster.pids().items()},
            "data_dir_bytes": dir_bytes(self.cluster.data_dir / "db"),
            **await self.collections(),
            "pending_events": None if backlog is None else backlog["pending_events"],
            "dead_events": None if backlog is None else backlog["dead_events"],
            "oldest_pending_age_s": None if backlog is None else backlog["oldest_pending_age_s"],
            "lag_p50_ms": _pct(lags, 50),
            "lag_p99_ms": _pct(lags, 99),
            "lag_samples": len(lags),
            "requests": len(taken),
            "api_p50_ms": _pct(latencies, 50),
            "api_p99_ms": _pct(latencies, 99),
            "codes": dict(codes),
            "errors": {c: n for c, n in codes.items() if not c.startswith(("2", "4"))},
            "in_flight": self.traffic.in_flight,
            "shed": self.traffic.shed,
        }
