"""`timeline switch-strategy --to NAME`: build a strategy's derived data on a live database.

While the old strategy keeps serving reads:
1. NAME is added to `service_config.maintained`; from then on every worker applies each event
   with its own strategy *and* NAME (workers re-read the list every CONFIG_REFRESH_S).
2. After twice that long, every event recorded before that moment is applied (this command
   applies them itself too, as one more worker), so no event is left that only the old
   strategy saw, except those whose effect the rebuild reads from the source of truth.
3. NAME's indexes are created and its derived data rebuilt for every user, each under the
   user's author lease, so a rebuild never interleaves with that author's events.
4. NAME is recorded as built and active. API processes and workers are then restarted with
   TIMELINE_STRATEGY=NAME; until they are, the old ones keep serving the old strategy, whose
   data is still maintained. `--retire OLD` afterwards stops maintaining the old one.
No reader ever sees an empty or half-built timeline: reads switch only when processes restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bson import ObjectId

from app import checkpoint, maintenance, recorded_settings
from app.context import AppContext
from app.models import utcnow
from app.settings import StrategyName
from app.store import Store
from app.strategies import TimelineStrategy, build_strategy
from fanout.leases import AuthorLeases
from fanout.worker import CONFIG_REFRESH_S, LEASE_S, Worker

# While waiting for another worker's author lease or for older events, look again this often.
POLL_S = 0.05


class SwitchError(Exception):
    pass


async def _config_update(store: Store, update: dict[str, dict[str, object]]) -> None:
    sets = {**update.get("$set", {}), "updated_at": utcnow()}
    await store.service_config.update_one({"_id": maintenance.CONFIG_ID}, {**update, "$set": sets})


async def _apply_events_before(ctx: AppContext, cutoff: ObjectId) -> None:
    """Wait until every event recorded before `cutoff` is applied, applying them as a worker."""
    worker = Worker(ctx, name=f"switch:{ObjectId()}")
    worker.config_refresh_s = 0.0  # always the current list of strategies
    try:
        while await ctx.queue.any_waiting_before(cutoff):
            if not await worker.process_one():
                await asyncio.sleep(POLL_S)  # the rest are leased by other workers
    finally:
        await worker.release_leases()


async def _acquire_waiting(
    leases: AuthorLeases, author: ObjectId, owner: str, lease_s: float
) -> checkpoint.Lease:
    """The author's lease, once the worker applying one of its events lets go; returned as the
    fence of the writes made under it (app.checkpoint)."""
    while True:
        sent_at = time.monotonic()
        if await leases.acquire(author, owner, utcnow(), lease_s):
            lease = checkpoint.Lease(sent_at)
            lease.renewed(sent_at, lease_s)
            return lease
        await asyncio.sleep(POLL_S)


async def rebuild_leased(
    strategy: TimelineStrategy,
    users: list[tuple[ObjectId, str]],
    progress: Callable[[int, int], None] | None = None,
    lease_s: float = LEASE_S,
) -> int:
    """`strategy.rebuild` and `rebuild_author` for each user while holding that user's author
    lease, so that neither interleaves with a worker applying that author's events. The lease is
    not renewed (one user's rebuild is bounded by TIMELINE_MAX): its writes are fenced by it
    instead, so a rebuild that stalled past it fails (LeaseLost) rather than write over a
    worker's later events. Returns documents changed."""
    owner = f"rebuild:{ObjectId()}"
    leases = AuthorLeases(strategy.store.author_leases)
    changed = 0
    for i, (uid, _) in enumerate(users, 1):
        token = checkpoint.lease.set(await _acquire_waiting(leases, uid, owner, lease_s))
        try:
            changed += await strategy.rebuild(uid)
            changed += await strategy.rebuild_author(uid)
        finally:
            checkpoint.lease.reset(token)
            await leases.release(uid, owner)
        if progress:
            progress(i, len(users))
    return changed


async def switch_to(
    ctx: AppContext,
    target: StrategyName,
    progress: Callable[[int, int], None] | None = None,
    *,
    refresh_s: float = CONFIG_REFRESH_S,
    lease_s: float = LEASE_S,
) -> int:
    """Build `target`'s derived data while the configured strategy serves; make it active.
    Returns the number of documents the rebuild changed."""
    if await maintenance.service_config(ctx.store) is None:
        # A database from before service_config: record what serves it now (TIMELINE_STRATEGY).
        await maintenance.ensure_ready(ctx.store, ctx.strategy.name)
    try:  # the target is built under this process's TIMELINE_MAX: it must be the recorded one
        await recorded_settings.ensure_matching(ctx.store, ctx.settings)
    except recorded_settings.SettingsMismatch as exc:
        raise SwitchError(str(exc)) from None
    await _config_update(ctx.store, {"$addToSet": {"maintained": target}})
    await asyncio.sleep(2 * refresh_s)
    await _apply_events_before(ctx, ObjectId.from_datetime(utcnow()))
    strategy = build_strategy(
        target,
        ctx.store,
        ctx.settings.timeline_max,
        graph=ctx.graph,
        bucket_size=ctx.settings.inbox_bucket_size,
        hybrid_threshold=ctx.settings.hybrid_threshold,
    )
    await strategy.ensure_indexes()
    changed = await rebuild_leased(
        strategy, await maintenance.user_ids(ctx.store), progress, lease_s
    )
    await _config_update(
        ctx.store,
        {"$addToSet": {"built": target, "maintained": target}, "$set": {"active_strategy": target}},
    )
    return changed


async def retire(store: Store, name: StrategyName) -> None:
    """Stop maintaining `name`'s derived data (it must not be the active strategy). Its data
    stays where it is but goes stale; switching back to it rebuilds it."""
    doc = await maintenance.service_config(store)
    if doc is None:
        raise SwitchError("this database has no service_config yet: nothing to retire")
    if doc["active_strategy"] == name:
        raise SwitchError(f"{name} is the active strategy; switch to another one first")
    if name in maintenance.ALWAYS_BUILT:  # nothing to go stale: it stays ready
        await _config_update(store, {"$pull": {"maintained": name}})
    else:
        await _config_update(store, {"$pull": {"maintained": name, "built": name}})
