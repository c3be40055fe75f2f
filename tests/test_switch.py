"""Live strategy switch: from each strategy to each other one, on a database filled by a random
workload, with writes going on during the switch. Reads under the old strategy stay right
throughout; afterwards every timeline under the new strategy equals the truth."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from app import maintenance
from app.strategies import STRATEGY_NAMES
from entrypoints.migrate import MIGRATIONS_DIR
from fanout import switch
from tests import harness
from tests.harness import Harness, running
from tests.worker_workload import random_workload, run_cli, worker_env

USERS = 8
OPERATIONS = 80
PAIRS = [(a, b) for a in STRATEGY_NAMES for b in STRATEGY_NAMES if a != b]
# How often the switch's workers re-read `maintained` (the command waits twice this before it
# rebuilds): long enough that writes land while both strategies are maintained.
SWITCH_REFRESH_S = 0.5
# Writes that must fall wholly inside the switch (after the target is maintained, before it is
# active), or the test would not show that they reach the new strategy's data.
MIN_WRITES_DURING = 2


@dataclass(frozen=True)
class Filled:
    """A database as the random workload left it (drained, no lease held): every collection's
    documents, and the users' tokens."""

    collections: dict[str, list[dict[str, Any]]]
    tokens: dict[str, str]


# The random workload is the switch's starting point, not what is tested, and it was most of a
# pair's time (2.9 s of 4.8 s): it is played once per source strategy (seeded by the source) and
# each of that source's four switches starts from a copy of the database it left, restored into
# the pair's own fresh database. The writes during and after the switch stay the pair's own.
FILLED: dict[str, Filled] = {}


async def fill(h: Harness, source: str) -> None:
    """The source's workload, played here the first time, else restored from FILLED."""
    db = h.ctx.database.db
    filled = FILLED.get(source)
    if filled is None:
        await random_workload(h, random.Random(source), USERS, OPERATIONS, drain_every=20)
        await h.drain()
        await h.worker.release_leases()  # a lease copied would stall the pair's own worker
        names = await db.list_collection_names()
        collections = {name: [doc async for doc in db[name].find()] for name in names}
        FILLED[source] = Filled(collections, dict(h.tokens))
        return
    # Over what this fresh database's start-up wrote (its indexes stay).
    for name, docs in filled.collections.items():
        await db[name].delete_many({})
        if docs:
            await db[name].insert_many(docs)
    h.tokens = dict(filled.tokens)


async def expect_truth(h: Harness, handles: list[str]) -> None:
    """Every listed user's timeline, read through the API, is the ground truth."""
    for handle in handles:
        uid = ObjectId((await h.client.get(f"/users/{handle}")).json()["id"])
        truth = [str(i) for i in await maintenance.truth_ids(h.ctx, uid)]
        assert await h.timeline_ids(handle) == truth, f"{handle} under {h.ctx.strategy.name}"


async def live_writes(h: Harness, rng: random.Random, handles: list[str]) -> None:
    a, b = rng.sample(handles, 2)
    roll = rng.random()
    if roll < 0.5:
        mine = await h.post(a, "during the switch")
        assert (await h.timeline_ids(a))[0] == mine["id"]  # own status at once
    elif roll < 0.75:
        await h.befriend(a, b)
    else:
        await h.unfriend(a, b)
    await drain_all(h)


# While switch_to rebuilds, it holds authors' leases, so one drain can stop with those authors'
# events still waiting; wait for them (bounded) instead of reading a timeline mid-flight.
DRAIN_ROUNDS = 400


async def drain_all(h: Harness) -> None:
    for _ in range(DRAIN_ROUNDS):
        await h.drain()
        if await h.ctx.queue.reader.pending_count() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("events still pending after the switch's leases should have expired")


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
async def test_switch_on_a_live_database(mongo_url: str, source: str, target: str) -> None:
    rng = random.Random(f"{source}{target}")
    old = harness.test_settings(mongo_url, source, timeline_max=6)
    handles = [f"user{i}" for i in range(USERS)]
    async with running(old) as hx:
        # what `timeline serve` does
        assert await maintenance.ensure_ready(hx.ctx.store, source) is None
        if target != "fanout_on_read":
            with pytest.raises(maintenance.StrategyNotBuilt):
                await maintenance.ensure_ready(hx.ctx.store, target)
        hx.worker.config_refresh_s = 0.0
        await fill(hx, source)
        await hx.drain()
        await expect_truth(hx, handles)

        building = asyncio.create_task(switch.switch_to(hx.ctx, target, refresh_s=SWITCH_REFRESH_S))
        during = 0  # writes begun after the target joined `maintained`, ended before the switch
        while not building.done():
            config = await maintenance.service_config(hx.ctx.store)
            both = config is not None and target in config["maintained"]
            await live_writes(hx, rng, handles)
            await expect_truth(hx, rng.sample(handles, 2))  # the old strategy keeps serving
            during += both and not building.done()
        await building
        print(f"{during} writes during the switch")  # shown on failure
        assert during >= MIN_WRITES_DURING

        config = await maintenance.service_config(hx.ctx.store)
        assert config is not None and config["active_strategy"] == target
        assert {source, target} <= set(config["built"]) & set(config["maintained"])
        assert await maintenance.ensure_ready(hx.ctx.store, target) is None
        assert "active strategy is" in (await maintenance.ensure_ready(hx.ctx.store, source) or "")

        new = old.model_copy(update={"timeline_strategy": target})
        async with running(new) as hy:
            hy.tokens = hx.tokens
            hy.worker.config_refresh_s = 0.0
            await expect_truth(hy, handles)
            assert (await maintenance.check(hy.ctx)).ok
            # Both stay maintained until the old one is retired.
            for _ in range(4):
                await live_writes(hy, rng, handles)
            await expect_truth(hy, handles)
            await expect_truth(hx, handles)
            await switch.retire(hx.ctx.store, source)  # type: ignore[arg-type]
            config = await maintenance.service_config(hx.ctx.store)
            assert config is not None and source not in config["maintained"]
            with pytest.raises(switch.SwitchError):
                await switch.retire(hx.ctx.store, target)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["fanout_on_read"])
async def test_commands_migrate_refuse_and_switch(h: Harness, tmp_path: Path) -> None:
    await random_workload(h, random.Random(3), 5, 30)
    await h.drain()
    env = worker_env(h.ctx.settings)
    migrated = await asyncio.to_thread(run_cli, env, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    # The migration recorded what this (pre-existing) database holds.
    config = await maintenance.service_config(h.ctx.store)
    assert config is not None and config["built"] == ["fanout_on_read"]
    assert "markers" in await h.ctx.database.db.list_collection_names()
    again = await asyncio.to_thread(run_cli, env, tmp_path, "migrate")
    assert again.returncode == 0, again.stderr  # nothing left to apply
    refused = await asyncio.to_thread(
        run_cli, {**env, "TIMELINE_STRATEGY": "receiver_copies"}, tmp_path, "worker"
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: TIMELINE_STRATEGY: receiver_copies's derived data")
    switched = await asyncio.to_thread(
        run_cli, env, tmp_path, "switch-strategy", "--to", "receiver_copies"
    )
    assert switched.returncode == 0, switched.stderr
    assert "receiver_copies is built" in switched.stdout
    # Roll back down to (and including) the service_config migration, past any newer ones.
    newer = [p for p in MIGRATIONS_DIR.glob("2*.py") if p.name > "20250601000100_service_config.py"]
    back = await asyncio.to_thread(
        run_cli, env, tmp_path, "migrate", "--backward", "--distance", str(len(newer) + 1)
    )
    assert back.returncode == 0, back.stderr
    assert await maintenance.service_config(h.ctx.store) is None
    assert "markers" not in await h.ctx.database.db.list_collection_names()
    # (Last: the second harness re-binds the models to its own client and drops the database.)
    new = h.ctx.settings.model_copy(update={"timeline_strategy": "receiver_copies"})
    async with running(new) as hy:
        hy.tokens = h.tokens
        await expect_truth(hy, [f"user{i}" for i in range(5)])
