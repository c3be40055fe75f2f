"""Three `python -m fanout` processes share one outbox while a random workload of many authors
runs through the API: afterwards every timeline equals the reference model, every event was
applied exactly once, and no two events of one author ever ran at the same time."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.storage.embedded import free_port
from tests import harness
from tests.harness import running
from tests.worker_workload import (
    copies_by_owner,
    kill,
    random_workload,
    reference_timelines,
    start_worker,
    stop,
    unfinished_events,
)

SEED = 77
USERS = 24
OPERATIONS = 200
WORKERS = 3
WAIT_LIMIT_S = 180.0


def overlaps_within_author(events: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    by_author: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_author[e["author_id"]].append(e)
    bad = []
    for evs in by_author.values():
        evs.sort(key=lambda e: e["started_at"])
        bad += [(x["_id"], y["_id"]) for x, y in pairwise(evs) if y["started_at"] < x["done_at"]]
    return bad


@pytest.mark.slow
async def test_three_workers_share_a_random_workload(mongo_url: str, tmp_path: Path) -> None:
    settings = harness.test_settings(mongo_url, "receiver_copies", timeline_max=5)
    async with running(settings) as h:
        port = free_port()  # w0 also serves its Prometheus metrics
        procs = [start_worker(settings, "w0", tmp_path, 30, "--metrics-port", str(port))]
        procs += [start_worker(settings, f"w{i}", tmp_path, 30) for i in range(1, WORKERS)]
        try:
            await random_workload(h, random.Random(SEED), USERS, OPERATIONS)
            deadline = time.monotonic() + WAIT_LIMIT_S
            while await unfinished_events():
                assert time.monotonic() < deadline, "the workers did not drain the outbox"
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                scraped = (await client.get(f"http://127.0.0.1:{port}/")).text
            codes = [stop(p) for p in procs]
        finally:
            for p in procs:
                kill(p)
        assert codes == [0] * WORKERS
        events = await h.ctx.store.events.find().to_list()
        assert len(events) > OPERATIONS  # friendship changes are two events each
        assert {e["state"] for e in events} == {"done"}
        assert {e["attempts"] for e in events} == {1}  # each applied once
        workers = {e["lease_owner"] for e in events}
        # w0's own metrics count exactly the events it applied, by kind.
        w0 = [e for e in events if e["lease_owner"] == "w0"]
        for kind in ("status_posted", "friendship_changed"):
            line = f'timeline_events_applied_total{{kind="{kind}"}} '
            counted = sum(float(x.split()[-1]) for x in scraped.splitlines() if x.startswith(line))
            assert counted == sum(e["kind"] == kind for e in w0), kind
        assert len(workers) >= 2, f"only {workers} did any work"
        assert overlaps_within_author(events) == []
        expected = await reference_timelines(settings.timeline_max)
        copies, total, distinct = await copies_by_owner(settings.timeline_max)
        assert total == distinct
        assert {u: ids for u, ids in expected.items() if ids} == copies
