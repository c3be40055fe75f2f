"""Claims events from the durable event queue (app.pipeline.queue) and applies them; N workers may
share it.

Claiming is two leases, an author's and then its oldest event's (fanout.claims). While an
event runs, a heartbeat renews both leases every LEASE_S / RENEWALS_PER_LEASE; if a
renewal finds a lease taken over (this worker stalled past LEASE_S), the handler is cancelled
and the event left to its new owner. If the worker dies, its leases expire after LEASE_S and
another worker (or this one, restarted) takes the event again: handlers are idempotent, and a
long fan-out resumes after its last saved batch (app.pipeline.checkpoint, `resume_after`, one per
strategy: while a switch maintains two, each resumes from its own). A failing
event is retried with exponential backoff and parked as `dead` after MAX_ATTEMPTS failures, or
after MAX_CLAIMS claims that never finished (a worker crashing on it every time): app.pipeline.queue
moves the events; this module is the loop, the failure policy and the heartbeat. Losing a race
with other handlers (Contention, a write conflict) is no failure: retried soon, not counted.
Every derived-data write of a handler is fenced by the lease (app.pipeline.checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bson import ObjectId
from pymongo.errors import OperationFailure, PyMongoError

from app.context import AppContext
from app.domain import revocations
from app.metrics import EVENTS_APPLIED, EVENTS_DEAD, EVENTS_FAILED
from app.pipeline import checkpoint
from app.pipeline.checkpoint import LeaseLost as LeaseLost
from app.pipeline.events import apply_event
from app.pipeline.queue import MAX_CLAIMS, QueuedEvent
from app.storage.db import domain_error_from_pymongo
from app.storage.models import utcnow
from app.strategies import TimelineStrategy
from app.strategies.contract import Contention
from fanout.claims import Claims
from fanout.leases import AuthorLeases
from fanout.maintained import Maintained

log = logging.getLogger("timeline.worker")

# An event whose worker has not renewed its lease within this time is presumed abandoned. Live
# workers renew several times per lease, so only a crash or a stall this long hands an event
# over; a crash costs at most this much delay. (`timeline worker --lease-seconds` overrides it.)
LEASE_S = 30.0
# Renewals per lease period: a worker may miss a couple (a slow database) and keep its lease.
RENEWALS_PER_LEASE = 3
# An event that lost a race with concurrent handlers (Contention, a write conflict) is retried
# after about this long (jittered, so that two racing handlers do not meet again in lockstep):
# long enough for the other handler's pass to end. Such attempts are not counted.
CONTENTION_RETRY_S = 0.2
# MongoDB's error code for a write that conflicted with a concurrent one.
WRITE_CONFLICT = 112
# Without a wake-up from this process, look for events written by other processes this often.
POLL_INTERVAL_S = 0.2
# While the database is unreachable, wait this long between attempts.
OUTAGE_BACKOFF_S = 1.0
# Log throughput at most this often.
REPORT_EVERY_S = 10.0
# How often a worker re-reads which strategies it must keep up to date (`service_config.
# maintained`): a switch waits twice this long before it relies on every worker knowing.
CONFIG_REFRESH_S = 2.0


def _is_contention(exc: Exception) -> bool:
    if isinstance(exc, Contention):
        return True
    return isinstance(exc, OperationFailure) and (
        exc.code == WRITE_CONFLICT or exc.has_error_label("TransientTransactionError")
    )


def _report_parked(event: QueuedEvent, error: str) -> None:
    EVENTS_DEAD.labels(event["kind"]).inc()
    log.error("event %s (%s) parked as dead: %s", event["_id"], event["kind"], error)


class Worker:
    def __init__(
        self, ctx: AppContext, *, name: str | None = None, lease_s: float = LEASE_S
    ) -> None:
        self.ctx = ctx
        # The event queue and the author leases of ctx's store.
        self.events = ctx.queue
        self.leases = AuthorLeases(ctx.store.author_leases)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_s = lease_s
        self.should_exit = False
        self.applied = 0
        self.failed = 0
        self.claims = Claims(self.events, self.leases, self.name, lease_s)
        self.config_refresh_s = CONFIG_REFRESH_S
        self.maintained = Maintained(ctx)

    async def strategies(self) -> list[TimelineStrategy]:
        """The configured strategy plus any other that `service_config` says to maintain."""
        return await self.maintained.strategies(self.config_refresh_s)

    async def claim(self) -> QueuedEvent | None:
        """Lease an author no one else holds and claim that author's oldest waiting event
        (fanout.claims)."""
        return await self.claims.claim()

    # -- applying ------------------------------------------------------------------------------
    async def _renew(
        self,
        event: QueuedEvent,
        lease: checkpoint.Lease,
        resume_after: dict[str, ObjectId] | None = None,
    ) -> bool:
        """Extend both leases (and save `resume_after`, the progress of each strategy); False,
        with `lease.lost` set, if either was taken over. The local deadline moves on only when
        both went through."""
        sent_at = time.monotonic()
        now = utcnow()
        until = now + timedelta(seconds=self.lease_s)
        renewed = await self.events.renew(event["_id"], self.name, until, resume_after)
        if not renewed or not await self.leases.renew(
            event["author_id"], self.name, now, self.lease_s
        ):
            lease.lost = True
            return False
        lease.renewed(sent_at, self.lease_s)
        return True

    async def _heartbeat(self, event: QueuedEvent, lease: checkpoint.Lease) -> None:
        """Renew the leases while the handler runs; return when they are lost.

        A renewal that fails with an error (a slow or unreachable database) is tried again at
        the next beat, but not past the lease: once it has run out, another worker may own the
        event, so the handler must stop (its writes are fenced anyway, app.pipeline.checkpoint). A
        renewal that is merely late (a busy event loop) and still finds the lease this worker's
        keeps it."""
        while True:
            await asyncio.sleep(self.lease_s / RENEWALS_PER_LEASE)
            try:
                if not await self._renew(event, lease):
                    return
            except PyMongoError as exc:
                log.warning("could not renew the lease of event %s: %r", event["_id"], exc)
                if lease.remaining_s() <= 0:
                    log.warning("the lease of event %s ran out unrenewed", event["_id"])
                    lease.lost = True
                    return

    async def _apply_all(
        self, event: QueuedEvent, lease: checkpoint.Lease, strategies: list[TimelineStrategy]
    ) -> None:
        """The handler: `event` applied with each strategy in turn, then its revocation record
        settled. Each strategy resumes from its own checkpoint: the maintained ones share the
        event, not their progress through its receivers (a strategy that never ran must not
        skip the receivers another one has done)."""
        progress = checkpoint.progress_of(event.get("resume_after"))

        def save_for(name: str) -> Callable[[ObjectId], Awaitable[None]]:
            async def save(last_done: ObjectId) -> None:
                # The whole map is written, so a strategy's save never undoes another's.
                progress[name] = last_done
                if not await self._renew(event, lease, resume_after=dict(progress)):
                    raise LeaseLost(f"event {event['_id']}")

            return save

        for strategy in strategies:
            cp = checkpoint.Checkpoint(progress.get(strategy.name), save_for(strategy.name))
            token = checkpoint.current.set(cp)  # this task's own context
            try:
                await apply_event(strategy, event, user_activity=self.ctx.store.user_activity)
            finally:
                checkpoint.current.reset(token)
        # No maintained strategy's derived data holds what the event removed any more.
        async with checkpoint.fenced():
            await revocations.settle(self.ctx.store.revocations, event)

    async def _apply(self, event: QueuedEvent) -> None:
        """Apply `event` with a checkpoint, a heartbeat and a fence (app.pipeline.checkpoint);
        LeaseLost
        if the lease was lost."""
        # The claim set `lease_until` from this worker's clock; the local deadline starts there.
        claimed_until = event["lease_until"]
        assert claimed_until is not None, "queue.claim_oldest leases every event it returns"
        left_s = (claimed_until - utcnow()).total_seconds()
        lease = checkpoint.Lease(
            time.monotonic() + left_s - self.lease_s * checkpoint.FENCE_MARGIN,
            author_leases=self.leases.coll,
            author_id=event["author_id"],
            owner=self.name,
            transactions=self.ctx.database.supports_transactions,
            lease_s=self.lease_s,
        )

        async def renew() -> bool:
            return await self._renew(event, lease)

        lease.renew = renew

        strategies = await self.strategies()
        lease_token = checkpoint.lease.set(lease)
        try:  # the handler's task copies the context, lease included, when created
            handler = asyncio.create_task(self._apply_all(event, lease, strategies))
        finally:
            checkpoint.lease.reset(lease_token)
        heartbeat = asyncio.create_task(self._heartbeat(event, lease))
        try:
            await asyncio.wait({handler, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (handler, heartbeat):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if not handler.cancelled():
            try:
                handler.result()  # the handler's own exception, if any
            except PyMongoError as exc:
                # A write cut off by the fence's deadline fails as a driver timeout; it is the
                # lost lease, not an outage or a failure of the event.
                if lease.remaining_s() <= 0:
                    raise LeaseLost(f"event {event['_id']}") from exc
                raise
            return
        raise LeaseLost(f"event {event['_id']}")

    async def _park(self, event: QueuedEvent, error: str) -> None:
        await self.events.park(event["_id"], self.name, error)
        _report_parked(event, error)

    async def _failed(self, event: QueuedEvent, exc: Exception) -> None:
        """Retry later with backoff, or park the event after MAX_ATTEMPTS failures."""
        self.failed += 1
        EVENTS_FAILED.labels(event["kind"]).inc()
        log.warning("event %s (%s) failed: %r", event["_id"], event["kind"], exc)
        if await self.events.fail(event, self.name, repr(exc)):
            _report_parked(event, repr(exc))
        await self.leases.release(event["author_id"], self.name)

    async def _contended(self, event: QueuedEvent, exc: Exception) -> None:
        """Retry soon, uncounted: racing another handler is no fault of the event (queue.
        contended)."""
        log.info("event %s (%s) raced another handler: %r", event["_id"], event["kind"], exc)
        delay = CONTENTION_RETRY_S * random.uniform(0.5, 1.5)
        await self.events.contended(event["_id"], self.name, repr(exc), delay)
        await self.leases.release(event["author_id"], self.name)

    async def process_one(self) -> bool:
        """Claim and apply one event. False when there was nothing to claim."""
        event = await self.claim()
        if event is None:
            return False
        author, kind = event["author_id"], event["kind"]
        if event["attempts"] > MAX_CLAIMS:
            await self._park(event, f"claimed {event['attempts']} times without finishing")
            await self.leases.release(author, self.name)
            return True
        try:
            await self._apply(event)
        except LeaseLost:
            log.warning("lost the lease of event %s (%s) to another worker", event["_id"], kind)
            await self.leases.release(author, self.name)  # a no-op if the new owner holds it
            return True
        except Contention as exc:
            await self._contended(event, exc)
            return True
        except PyMongoError as exc:
            if _is_contention(exc):
                await self._contended(event, exc)
                return True
            if domain_error_from_pymongo(exc) is None:  # not an outage: an ordinary failure
                await self._failed(event, exc)
                return True
            # The database went away mid-event: no failure of the event's own, so no backoff
            # schedule and no parking after MAX_ATTEMPTS (only MAX_CLAIMS bounds it). Hand the
            # event back soon (best effort: if the database is still gone the lease simply
            # expires) and let `run` back off.
            with contextlib.suppress(PyMongoError):
                await self.events.hand_back(event["_id"], self.name, OUTAGE_BACKOFF_S)
                await self.leases.release(author, self.name)
            raise
        except Exception as exc:
            await self._failed(event, exc)
            return True
        await self.events.complete(event["_id"], self.name)
        EVENTS_APPLIED.labels(kind).inc()
        self.applied += 1
        await self.claims.applied(author)
        return True

    async def release_leases(self) -> None:
        await self.claims.release_held()

    async def drain(self) -> int:
        """Apply events until none is claimable; returns how many were applied."""
        n = 0
        while await self.process_one():
            n += 1
        return n

    async def run(self) -> None:
        """Loop until `should_exit`; the event being applied is always finished first."""
        log.info(
            "worker %s started (strategy %s, lease %.0fs)",
            self.name,
            self.ctx.strategy.name,
            self.lease_s,
        )
        last_report, applied_then = time.monotonic(), 0
        wake = self.ctx.events_recorded
        while not self.should_exit:
            try:
                worked = await self.process_one()
            except PyMongoError as exc:
                log.warning("database unavailable, backing off: %r", exc)
                await asyncio.sleep(OUTAGE_BACKOFF_S)
                continue
            elapsed = time.monotonic() - last_report
            if elapsed >= REPORT_EVERY_S and self.applied != applied_then:
                rate = (self.applied - applied_then) / elapsed
                log.info("applied %d events (%.1f/s)", self.applied, rate)
                last_report, applied_then = time.monotonic(), self.applied
            if not worked:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_INTERVAL_S)
        with contextlib.suppress(PyMongoError):
            await self.release_leases()
        log.info("worker %s stopped after %d events", self.name, self.applied)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit)

    def handle_exit(self) -> None:
        self.should_exit = True
        self.ctx.events_recorded.set()
