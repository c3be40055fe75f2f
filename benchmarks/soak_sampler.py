"""What a soak run records every SAMPLE_EVERY_S: memory of each process, storage, the backlog,
freshness and API latency in that window (benchmarks/soak.py). Its own reads of the database
must not stop the server it measures: SecantusDB answers collStats and filtered counts by
walking records under its storage lock."""

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
# Documents per collection are counted every COUNT_EVERY samples (every 30 s), and carried in
# between, by each collection's `count` without a filter: the embedded server walks its records
# without decoding them under its storage lock, about 8 us a document (0.23 s for the 30,000
# timeline entries at the end of the committed hour), one collection at a time so that requests
# run between them.
COUNT_EVERY = 3
# Bytes per collection come from collStats, which the embedded server answers by walking every
# record twice and every index entry once under that same lock (about 60 us a document): taken
# every 30 s it stopped the whole server for 0.6 s at the start of the committed hour and 3.5 s
# at its end, and each of the hour's 36 windows with lag p99 over 2 s was the one holding such a
# stop (none of the 220 others passed 1.2 s; docs/benchmarks.md, "Soak"). So it is taken at the
# first sample and at the final one (after the drain, when no window is measured) only; the
# data directory's bytes are still sampled every 10 s.
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
            self.samples.append(await self.sample(final=until.is_set()))

    async def collections(self, *, final: bool = False) -> dict[str, Any]:
        """Documents per collection (fresh every COUNT_EVERY samples, carried in between), their
        bytes and index bytes at the first and the `final` sample only (`collections_exact`),
        and events by state; None while the database is unreachable."""
        db = self.mongo[self.db_name]
        try:
            with pymongo.timeout(SAMPLE_DB_TIMEOUT_S):
                exact = final or self._last_collections is None
                fresh = exact or len(self.samples) % COUNT_EVERY == 0
                out: dict[str, Any] = {}
                names = sorted(await db.list_collection_names()) if fresh else []
                for name in names:
                    if exact:
                        stats = await db.command("collStats", name)
                        out[name] = {
                            "docs": int(stats.get("count", 0)),
                            "bytes": int(stats.get("size", 0)),
                            "index_bytes": int(stats.get("totalIndexSize", 0)),
                        }
                    else:
                        out[name] = {"docs": await db[name].estimated_document_count()}
                if not fresh and self._last_collections is not None:
                    out = self._last_collections
                self._last_collections = out
                # Counted on the (state, _id) index for the few not-done ones; `done` is the
                # rest of the collection's count: counting it by a filter would decode every
                # done event on the embedded server, a cost the service would then pay every
                # 10 s for our measurement.
                events: dict[str, int | None] = {
                    s: await db.events.count_documents({"state": s}) for s in EVENT_STATES
                }
                done = out.get("events", {}).get("docs", 0) - sum(n or 0 for n in events.values())
                events["done"] = done if fresh else None
                return {
                    "collections": out,
                    "collections_fresh": fresh,
                    "collections_exact": exact,
                    "events_by_state": events,
                }
        except PyMongoError:
            return {"collections": None, "events_by_state": None}

    async def sample(self, *, final: bool = False) -> dict[str, Any]:
        """One window's figures; `final` (after the load and drain) also measures bytes."""
        now = time.monotonic()
        taken, self.traffic.samples = self.traffic.samples, []
        lags = [x * 1000 for x in self.probe.lags_s[self._lag_seen :]]
        self._lag_seen = len(self.probe.lags_s)
        latencies = [s.ms for s in taken if s.code not in ("transport", "timeout")]
        codes = Counter(s.code for s in taken)
        backlog = await asyncio.to_thread(health, self.cluster.url)
        pids = self.cluster.pids()
        return {
            "t_s": round(now - self.started, 1),
            "rss_bytes": {role: rss_bytes(pid) for role, pid in pids.items()},
            "pids": pids,
            "data_dir_bytes": dir_bytes(self.cluster.data_dir / "db"),
            **await self.collections(final=final),
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
