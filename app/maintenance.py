"""Rebuilding derived data and checking it against the ground truth."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bson import ObjectId

from app import graph
from app.context import AppContext
from app.models import User
from app.strategies.common import truth_timeline


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


async def user_ids(handle: str | None = None) -> list[tuple[ObjectId, str]]:
    flt = {} if handle is None else {"handle": handle}
    coll = User.get_pymongo_collection()
    return [(d["_id"], d["handle"]) async for d in coll.find(flt, {"handle": 1}).sort("_id", 1)]


async def rebuild(
    ctx: AppContext,
    handle: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Recompute the strategy's derived data for one user or all; returns documents changed."""
    users = await user_ids(handle)
    changed = 0
    for i, (uid, _) in enumerate(users, 1):
        changed += await ctx.strategy.rebuild(uid)
        if progress:
            progress(i, len(users))
    return changed


async def truth_ids(ctx: AppContext, user_id: ObjectId) -> list[ObjectId]:
    friends = await graph.friend_ids(user_id)
    return [d["_id"] for d in await truth_timeline(user_id, friends, ctx.settings.timeline_max)]


async def check(ctx: AppContext, sample: int | None = None) -> CheckReport:
    """Compare materialized timelines with the fan-out-on-read answer (the ground truth)."""
    users = await user_ids()
    if sample is not None and sample < len(users):
        users = random.sample(users, sample)
    drifted = []
    for uid, handle in users:
        truth = await truth_ids(ctx, uid)
        seen = await ctx.strategy.timeline_ids(uid)
        truth_set, seen_set = set(truth), set(seen)
        missing = [str(i) for i in truth if i not in seen_set]
        extra = [str(i) for i in seen if i not in truth_set]
        if missing or extra:
            drifted.append(Drift(handle, missing, extra))
    return CheckReport(checked=len(users), drifted=drifted)
