"""Rebuilding derived data, checking it against the ground truth, and knowing which strategy's
derived data a database holds (the `service_config` document; see docs/operations.md)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from app.context import AppContext
from app.storage.models import utcnow
from app.storage.store import Store
from app.strategies import specs
from app.strategies.truth import truth_timeline

CONFIG_ID = "service"


def always_built() -> tuple[str, ...]:
    """Strategies with no derived data: always ready to serve any database."""
    return tuple(s.name for s in specs() if s.always_built)


class StrategyNotBuilt(Exception):
    """The configured strategy has no derived data in this database; serving it would show
    empty or wrong timelines. One line that names the variable."""


@dataclass
class Drift:
    handle: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    checked: int
    drifted: list[Drift]

    @property
    def ok(self) -> bool:
        return not self.drifted


async def user_ids(store: Store, handle: str | None = None) -> list[tuple[ObjectId, str]]:
    flt = {} if handle is None else {"handle": handle}
    coll = store.users
    return [(d["_id"], d["handle"]) async for d in coll.find(flt, {"handle": 1}).sort("_id", 1)]


async def truth_ids(ctx: AppContext, user_id: ObjectId) -> list[ObjectId]:
    friends = await ctx.graph.friend_ids(user_id)
    truth = await truth_timeline(ctx.store.statuses, user_id, friends, ctx.settings.timeline_max)
    return [d["_id"] for d in truth]


async def check(ctx: AppContext, sample: int | None = None) -> CheckReport:
    """Compare materialized timelines with the fan-out-on-read answer (the ground truth)."""
    users = await user_ids(ctx.store)
    if sample is not None and sample < len(users):
        users = random.sample(users, sample)
    drifted = []
    for uid, handle in users:
        truth = await truth_ids(ctx, uid)
        # What reads serve: an away or returning user's materialized timeline is stale by
        # design (no fan-out for them) and serves no read until it is rebuilt (app.domain.activity).
        served = ctx.strategy if await ctx.activity.serves_materialized(uid) else ctx.truth
        seen = await served.timeline_ids(uid)
        truth_set, seen_set = set(truth), set(seen)
        missing = [str(i) for i in truth if i not in seen_set]
        extra = [str(i) for i in seen if i not in truth_set]
        if missing or extra:
            drifted.append(Drift(handle, missing, extra))
    return CheckReport(checked=len(users), drifted=drifted)


async def infer_built(store: Store) -> list[str]:
    """For a database from before `service_config` existed: which strategies' data is there."""
    built = set(always_built())
    for spec in specs():
        if spec.built_probe is not None:
            collection, flt = spec.built_probe
            if await store.db[collection].find_one(flt, {"_id": 1}):
                built.add(spec.name)
    return sorted(built)


async def service_config(store: Store) -> dict[str, Any] | None:
    return await store.service_config.find_one({"_id": CONFIG_ID})


async def ensure_ready(store: Store, strategy: str) -> str | None:
    """Refuse a strategy whose derived data was never built in this database; record the
    strategy of a new database. Returns a warning when `strategy` is built but not the active
    one (the moments around a switch, while processes are restarted one by one)."""
    config = store.service_config
    doc = await service_config(store)
    if doc is None:
        empty = await store.statuses.find_one({}, {"_id": 1}) is None
        built = sorted({*always_built(), strategy}) if empty else await infer_built(store)
        if strategy not in built:
            raise StrategyNotBuilt(
                f"TIMELINE_STRATEGY: {strategy}'s derived data is not in this database (it has "
                f"{', '.join(built)}); run `timeline switch-strategy --to {strategy}` first"
            )
        await config.update_one(
            {"_id": CONFIG_ID},
            {
                "$setOnInsert": {
                    "active_strategy": strategy,
                    "built": built,
                    "maintained": [strategy],
                    "updated_at": utcnow(),
                }
            },
            upsert=True,
        )
        doc = await service_config(store)
        assert doc is not None
    if strategy not in doc["built"]:
        raise StrategyNotBuilt(
            f"TIMELINE_STRATEGY: {strategy}'s derived data was never built in this database "
            f"(it serves {doc['active_strategy']}); run `timeline switch-strategy --to "
            f"{strategy}` first"
        )
    if strategy != doc["active_strategy"]:
        return (
            f"TIMELINE_STRATEGY is {strategy} but the database's active strategy is "
            f"{doc['active_strategy']}: restart every process with the same one"
        )
    return None
