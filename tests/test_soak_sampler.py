"""The soak sampler's storage figures (benchmarks/soak_sampler.py) against the test server:
documents per collection every COUNT_EVERY samples by a plain count, carried in between, and
bytes (collStats, which stops the embedded server for a walk of every index) only at the first
and the final sample."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from benchmarks.probe import Probe
from benchmarks.soak_cluster import Cluster
from benchmarks.soak_sampler import COUNT_EVERY, Sampler
from benchmarks.soak_traffic import Traffic


async def test_bytes_only_at_the_ends_and_counts_every_few_samples(
    mongo_url: str, tmp_path: Path
) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db_name = f"sampler_{uuid.uuid4().hex[:8]}"
    db = mongo[db_name]
    try:
        async with httpx.AsyncClient() as client:
            sampler = Sampler(
                Cluster(tmp_path, 1, "receiver_copies"),
                Traffic(client, random.Random(1)),
                Probe({}, {}),
                mongo,
                db_name,
                started=0.0,
            )
            await db.statuses.insert_many([{"text": "x" * 100} for _ in range(3)])
            await db.events.insert_many([{"state": "pending"}, {"state": "done"}])

            first = await sampler.collections()
            assert first["collections_exact"] and first["collections_fresh"]
            assert first["collections"]["statuses"]["docs"] == 3
            assert first["collections"]["statuses"]["bytes"] > 300
            assert first["events_by_state"]["pending"] == 1
            assert first["events_by_state"]["done"] == 1

            await db.statuses.insert_many([{"text": "y"} for _ in range(2)])
            sampler.samples.append(first)  # a sample between two counts: carried
            carried = await sampler.collections()
            assert not carried["collections_fresh"]
            assert carried["collections"]["statuses"]["docs"] == 3
            assert carried["events_by_state"]["done"] is None

            sampler.samples.extend([carried] * (COUNT_EVERY - 1))  # the next count is due
            counted = await sampler.collections()
            assert counted["collections_fresh"] and not counted["collections_exact"]
            assert counted["collections"]["statuses"] == {"docs": 5}
            assert counted["events_by_state"]["done"] == 1

            final = await sampler.collections(final=True)
            assert final["collections_exact"]
            statuses = final["collections"]["statuses"]
            assert statuses["docs"] == 5
            assert statuses["bytes"] > first["collections"]["statuses"]["bytes"]
    finally:
        await mongo.drop_database(db_name)
        await mongo.close()
