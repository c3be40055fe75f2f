"""`timeline switch-strategy --to NAME`: build a strategy's derived data on a live database.

While the old strategy keeps serving reads:
1. NAME is added to `service_config.maintained`; from then on every worker applies each event
   with its own strategy *and* NAME (workers re-read the list every CONFIG_REFRESH_S).
2. After twice that long, every event recorded before that moment is applied (this command
   applies them itself too, as one more worker), so no event is left that only the old
   strategy saw, except those whose effect the rebuild reads from the source of truth.
3. NAME's indexes are created and its derived data rebuilt for every user, each under the
   user's author lease (renewed while the user's step runs), so a rebuild never interleaves
   with that author's events. The last user done is saved: a switch run again after a crash
   resumes there.
4. NAME is recorded as built and active. API processes and workers are then restarted with
   TIMELINE_STRATEGY=NAME; until they are, the old ones keep serving the old strategy, whose
   data is still maintained. `--retire OLD` afterwards stops maintaining the old one.
No reader ever sees an empty or half-built timeline: reads switch only when processes restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bson import ObjectId
from pymongo.errors import PyMongoError

from app import maintenance
from app.context import AppContext
from app.pipeline import checkpoint
from app.settings import StrategyName
from app.storage import recorded_settings
from app.storage.models import utcnow
from app.storage.store import Store
from app.strategies import TimelineStrategy
from fanout.leases import AuthorLeases
from fanout.worker import CONFIG_REFRESH_S, LEASE_S, RENEWALS_PER_LEASE, LeaseLost, Worker

log = logging.getLogger("timeline.switch")

# While waiting for another worker's author lease or for older events, look again this often.
POLL_S = 0.05
# Leases lost in a row (each a stall past the lease, despite the renewals) before a rebuild gives
# up on a user and stops; run again with the same key, it resumes there.
USER_ATTEMPTS = 3
# The `service_config` document (its own, beside the config: a database without a config yet
# can be rebuilt too) that holds each resumable rebuild's last user done, by key.
PROGRESS_ID = "rebuild_progress"


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
        while await ctx.queue.reader.any_waiting_before(cutoff):
            if not await worker.process_one():
                await asyncio.sleep(POLL_S)  # the rest are leased by other workers
    finally:
        await worker.release_leases()


async def _acquire_waiting(
    leases: AuthorLeases, author: ObjectId, owner: str, lease_s: float
) -> checkpoint.Lease:
    """The author's lease, once the worker applying one of its events lets go; returned as the
    fence of the writes made under it (app.pipeline.checkpoint), renewable as the worker's is."""
    while True:
        sent_at = time.monotonic()
        if await leases.acquire(author, owner, utcnow(), lease_s):
            return _renewable(leases, author, owner, lease_s, sent_at)
        await asyncio.sleep(POLL_S)


def _renewable(
    leases: AuthorLeases, author: ObjectId, owner: str, lease_s: float, sent_at: float
) -> checkpoint.Lease:
    """The lease just acquired (the acquisition sent at `sent_at`), with its renewal."""
    lease = checkpoint.Lease(sent_at, lease_s=lease_s)
    lease.renewed(sent_at, lease_s)

    async def renew() -> bool:
        sent_at = time.monotonic()
        if not await leases.renew(author, owner, utcnow(), lease_s):
            lease.lost = True
            return False
        lease.renewed(sent_at, lease_s)
        return True

    lease.renew = renew
    return lease


async def _heartbeat(lease: checkpoint.Lease, lease_s: float) -> None:
    """Renew `lease` every lease_s / RENEWALS_PER_LEASE while one user's rebuild runs, as the
    worker's heartbeat does (fanout.worker): a renewal that fails with an error is tried again
    at the next beat, not past the lease."""
    assert lease.renew is not None
    while True:
        await asyncio.sleep(lease_s / RENEWALS_PER_LEASE)
        try:
            if not await lease.renew():
                return
        except PyMongoError as exc:
            log.warning("could not renew a rebuild's author lease: %r", exc)
            if lease.remaining_s() <= 0:
                lease.lost = True
                return


async def _rebuild_user(
    strategy: TimelineStrategy, leases: AuthorLeases, uid: ObjectId, owner: str, lease_s: float
) -> int:
    """One user's rebuild under that user's author lease, renewed while it runs; a lease lost
    all the same (a stall past it) fails the step's next write, and the step is redone under a
    fresh lease (rebuilds are idempotent), at most USER_ATTEMPTS times."""
    for attempt in range(1, USER_ATTEMPTS + 1):
        lease = await _acquire_waiting(leases, uid, owner, lease_s)
        token = checkpoint.lease.set(lease)
        heartbeat = asyncio.create_task(_heartbeat(lease, lease_s))
        try:
            changed = await strategy.rebuild(uid)
            return changed + await strategy.rebuild_author(uid)
        except LeaseLost:
            if attempt == USER_ATTEMPTS:
                raise
            log.warning("rebuild of %s lost its lease (attempt %d); redoing it", uid, attempt)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            checkpoint.lease.reset(token)
            await leases.release(uid, owner)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _saved_progress(store: Store, key: str) -> ObjectId | None:
    doc = await store.service_config.find_one({"_id": PROGRESS_ID}, {key: 1})
    done = (doc or {}).get(key)
    return done if isinstance(done, ObjectId) else None


async def rebuild_leased(
    store: Store,
    strategy: TimelineStrategy,
    users: list[tuple[ObjectId, str]],
    progress: Callable[[int, int], None] | None = None,
    lease_s: float = LEASE_S,
    *,
    resume_key: str | None = None,
) -> int:
    """`strategy.rebuild` and `rebuild_author` for each user (of `store`) while holding that
    user's author lease, so that neither interleaves with a worker applying that author's
    events. The lease is renewed while a user's step runs, as a worker renews its own (a hybrid
    author crossing down takes tens of seconds), and the step's writes are fenced by it, so a
    rebuild that stalled past it never writes over a worker's later events: that user is redone
    under a new lease.

    With `resume_key`, users are taken in id order and the last one done is saved under that key
    (service_config's PROGRESS_ID document) after each user: a run cut short (a crash, Ctrl-C, a
    lease lost for good) resumes after it when called again with the same key, and a run that
    finishes clears it. Returns documents changed."""
    owner = f"rebuild:{ObjectId()}"
    leases = AuthorLeases(store.author_leases)
    done_until = None if resume_key is None else await _saved_progress(store, resume_key)
    if resume_key is not None:
        users = sorted(users)
    changed = 0
    for i, (uid, _) in enumerate(users, 1):
        if done_until is None or uid > done_until:
            changed += await _rebuild_user(strategy, leases, uid, owner, lease_s)
            if resume_key is not None:
                await store.service_config.update_one(
                    {"_id": PROGRESS_ID}, {"$set": {resume_key: uid}}, upsert=True
                )
        if progress:
            progress(i, len(users))
    if resume_key is not None:
        await store.service_config.update_one({"_id": PROGRESS_ID}, {"$unset": {resume_key: ""}})
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
    strategy = ctx.build_strategy(target)
    await strategy.ensure_indexes()
    changed = await rebuild_leased(
        ctx.store,
        strategy,
        await maintenance.user_ids(ctx.store),
        progress,
        lease_s,
        resume_key=f"switch:{target}",
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
    if name in maintenance.always_built():  # nothing to go stale: it stays ready
        await _config_update(store, {"$pull": {"maintained": name}})
    else:
        await _config_update(store, {"$pull": {"maintained": name, "built": name}})
