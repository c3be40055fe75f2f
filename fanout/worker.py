"""Claims events from the durable event queue (app.queue) and applies them; N workers may share it.

Claiming is two leases (fanout.leases has the argument for the first):
1. the *author* lease: only one worker at a time applies events of one author (the handlers
   are written for that); events of different authors run in parallel on different workers;
2. the *event* lease (`lease_owner`, `lease_until` on the event): holding the author lease, the
   worker takes that author's oldest waiting event, so each author's events run in `_id` order.

While an event runs, a heartbeat renews both leases every LEASE_S / RENEWALS_PER_LEASE; if a
renewal finds a lease taken over (this worker stalled past LEASE_S), the handler is cancelled
and the event left to its new owner. If the worker dies, its leases expire after LEASE_S and
another worker (or this one, restarted) takes the event again: handlers are idempotent, and a
long fan-out resumes after its last saved batch (app.checkpoint, `resume_after`). A failing
event is retried with exponential backoff and parked as `dead` after MAX_ATTEMPTS failures, or
after MAX_CLAIMS claims that never finished (a worker crashing on it every time): app.queue
moves the events; this module is the loop, the author leases and the heartbeat. Losing a race
with other handlers (Contention, a write conflict) is no failure: retried soon, not counted.
Every derived-data write of a handler is fenced by the lease (app.checkpoint).
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
from collections import deque
from datetime import timedelta

from bson import ObjectId
from pymongo.errors import OperationFailure, PyMongoError

from app import checkpoint, queue
from app.checkpoint import LeaseLost as LeaseLost
from app.context import AppContext
from app.db import domain_error_from_pymongo
from app.events import apply_event
from app.maintenance import CONFIG_ID
from app.metrics import EVENTS_APPLIED, EVENTS_DEAD, EVENTS_FAILED
from app.models import ServiceConfig, utcnow
from app.queue import MAX_CLAIMS, QueuedEvent
from app.settings import STRATEGY_NAMES
from app.strategies import TimelineStrategy, build_strategy
from app.strategies.base import Contention
from fanout import leases

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
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_s = lease_s
        self.should_exit = False
        self.applied = 0
        self.failed = 0
        # The author whose lease this worker kept after an event, to take its next one cheaply.
        self._held: ObjectId | None = None
        # Authors of the claimable events the last candidate query found, one entry per event,
        # oldest first, minus those claimed since (see `_candidates`).
        self._queue: deque[ObjectId] = deque()
        self.config_refresh_s = CONFIG_REFRESH_S
        self._config_read_at: float | None = None
        # Other strategies whose derived data is being built or kept (during a switch).
        self._also: dict[str, TimelineStrategy] = {}

    async def strategies(self) -> list[TimelineStrategy]:
        """The configured strategy plus any other that `service_config` says to maintain."""
        now = time.monotonic()
        if self._config_read_at is None or now - self._config_read_at >= self.config_refresh_s:
            doc = await ServiceConfig.get_pymongo_collection().find_one(
                {"_id": CONFIG_ID}, {"maintained": 1}
            )
            own = self.ctx.strategy.name
            names = [
                n for n in (doc or {}).get("maintained", []) if n != own and n in STRATEGY_NAMES
            ]
            also = {}
            for name in names:
                if name not in self._also:
                    log.info("also maintaining %s's derived data", name)
                    strategy = build_strategy(
                        name,
                        self.ctx.store,
                        self.ctx.settings.timeline_max,
                        graph=self.ctx.graph,
                        hybrid_threshold=self.ctx.settings.hybrid_threshold,
                    )
                    await strategy.ensure_indexes()
                    also[name] = strategy
                else:
                    also[name] = self._also[name]
            self._also = also
            self._config_read_at = now
        return [self.ctx.strategy, *self._also.values()]

    # -- claiming ------------------------------------------------------------------------------
    async def claim(self) -> QueuedEvent | None:
        """Lease an author no one else holds and claim that author's oldest waiting event."""
        if self._held is not None:
            author, self._held = self._held, None
            if await leases.renew(author, self.name, utcnow(), self.lease_s):
                event = await queue.claim_oldest(author, self.name, self.lease_s)
                if event is not None:
                    self._forget(author, 1)
                    return event
            self._forget(author)
            await leases.release(author, self.name)
        refreshed = False
        while True:
            if not self._queue:
                if refreshed:
                    return None
                self._queue = deque(await self._candidates())
                refreshed = True
                if not self._queue:
                    return None
            author = self._queue.popleft()
            # A fresh clock reading: the queue may have been read a while ago.
            if not await leases.acquire(author, self.name, utcnow(), self.lease_s):
                self._forget(author)  # another worker holds it: it applies those events
                continue
            event = await queue.claim_oldest(author, self.name, self.lease_s)
            if event is not None:
                return event
            self._forget(author)
            await leases.release(author, self.name)

    async def _candidates(self) -> list[ObjectId]:
        """The authors of the oldest claimable events that no other worker holds (queue.
        candidates). One query serves up to CLAIM_CANDIDATES claims: a claim re-checks everything
        it relies on (the author's lease, then the author's oldest waiting event), so an entry
        made stale by another worker only costs a failed lease or an empty look."""
        now = utcnow()
        busy = set(await leases.held(now, by_others_than=self.name))
        return await queue.candidates(now, busy)

    def _forget(self, author: ObjectId, n: int | None = None) -> None:
        """Drop `n` (default: all) of `author`'s entries from the candidate queue."""
        kept: deque[ObjectId] = deque()
        for a in self._queue:
            if a == author and (n is None or n > 0):
                n = None if n is None else n - 1
                continue
            kept.append(a)
        self._queue = kept

    # -- applying ------------------------------------------------------------------------------
    async def _renew(
        self,
        event: QueuedEvent,
        lease: checkpoint.Lease,
        resume_after: ObjectId | None = None,
    ) -> bool:
        """Extend both leases (and save `resume_after`); False, with `lease.lost` set, if either
        was taken over. The local deadline moves on only when both went through."""
        sent_at = time.monotonic()
        now = utcnow()
        until = now + timedelta(seconds=self.lease_s)
        renewed = await queue.renew(event["_id"], self.name, until, resume_after)
        if not renewed or not await leases.renew(event["author_id"], self.name, now, self.lease_s):
            lease.lost = True
            return False
        lease.renewed(sent_at, self.lease_s)
        return True

    async def _heartbeat(self, event: QueuedEvent, lease: checkpoint.Lease) -> None:
        """Renew the leases while the handler runs; return when they are lost.

        A renewal that fails with an error (a slow or unreachable database) is tried again at
        the next beat, but not past the lease: once it has run out, another worker may own the
        event, so the handler must stop (its writes are fenced anyway, app.checkpoint). A
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

    async def _apply(self, event: QueuedEvent) -> None:
        """Apply `event` with a checkpoint, a heartbeat and a fence (app.checkpoint); LeaseLost
        if the lease was lost."""
        # The claim set `lease_until` from this worker's clock; the local deadline starts there.
        claimed_until = event["lease_until"]
        assert claimed_until is not None, "queue.claim_oldest leases every event it returns"
        left_s = (claimed_until - utcnow()).total_seconds()
        lease = checkpoint.Lease(
            time.monotonic() + left_s - self.lease_s * checkpoint.FENCE_MARGIN,
            author_id=event["author_id"],
            owner=self.name,
            transactions=self.ctx.database.supports_transactions,
            lease_s=self.lease_s,
        )

        async def renew() -> bool:
            return await self._renew(event, lease)

        lease.renew = renew

        async def save(last_done: ObjectId) -> None:
            if not await self._renew(event, lease, resume_after=last_done):
                raise LeaseLost(f"event {event['_id']}")

        strategies = await self.strategies()

        async def apply_all() -> None:
            for strategy in strategies:
                await apply_event(strategy, event)

        token = checkpoint.current.set(checkpoint.Checkpoint(event.get("resume_after"), save))
        lease_token = checkpoint.lease.set(lease)
        try:  # the handler's task copies the context, checkpoint included, when created
            handler = asyncio.create_task(apply_all())
        finally:
            checkpoint.lease.reset(lease_token)
            checkpoint.current.reset(token)
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
        await queue.park(event["_id"], self.name, error)
        _report_parked(event, error)

    async def _failed(self, event: QueuedEvent, exc: Exception) -> None:
        """Retry later with backoff, or park the event after MAX_ATTEMPTS failures."""
        self.failed += 1
        EVENTS_FAILED.labels(event["kind"]).inc()
        log.warning("event %s (%s) failed: %r", event["_id"], event["kind"], exc)
        if await queue.fail(event, self.name, repr(exc)):
            _report_parked(event, repr(exc))
        await leases.release(event["author_id"], self.name)

    async def _contended(self, event: QueuedEvent, exc: Exception) -> None:
        """Retry soon, uncounted: racing another handler is no fault of the event (queue.
        contended)."""
        log.info("event %s (%s) raced another handler: %r", event["_id"], event["kind"], exc)
        delay = CONTENTION_RETRY_S * random.uniform(0.5, 1.5)
        await queue.contended(event["_id"], self.name, repr(exc), delay)
        await leases.release(event["author_id"], self.name)

    async def process_one(self) -> bool:
        """Claim and apply one event. False when there was nothing to claim."""
        event = await self.claim()
        if event is None:
            return False
        author, kind = event["author_id"], event["kind"]
        if event["attempts"] > MAX_CLAIMS:
            await self._park(event, f"claimed {event['attempts']} times without finishing")
            await leases.release(author, self.name)
            return True
        try:
            await self._apply(event)
        except LeaseLost:
            log.warning("lost the lease of event %s (%s) to another worker", event["_id"], kind)
            await leases.release(author, self.name)  # a no-op if the new owner holds it
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
                await queue.hand_back(event["_id"], self.name, OUTAGE_BACKOFF_S)
                await leases.release(author, self.name)
            raise
        except Exception as exc:
            await self._failed(event, exc)
            return True
        await queue.complete(event["_id"], self.name)
        EVENTS_APPLIED.labels(kind).inc()
        self.applied += 1
        if author in self._queue:
            self._held = author  # its next event is taken without a new search
        else:  # none was waiting when last looked: free the author now, saving two round trips
            await leases.release(author, self.name)
        return True

    async def release_leases(self) -> None:
        if self._held is not None:
            author, self._held = self._held, None
            await leases.release(author, self.name)

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


class WorkerPool:
    """Several claim-and-apply loops in one process, each a Worker with its own name and leases,
    coordinating with each other exactly as separate processes do (author leases).

    An event's time is mostly spent waiting: about eight round trips, each fsynced by the
    embedded server, plus the API's requests queueing in front of them on a shared event loop.
    Loops that wait at the same time overlap those waits. Measured in a 50-client load run
    (docs/benchmarks.md): one worker process drained its backlog in a third of the load's
    duration, two in a twentieth."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        name: str | None = None,
        lease_s: float = LEASE_S,
        concurrency: int = 1,
    ) -> None:
        base = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        # The first loop keeps the plain name: with one loop, leases name the process as before.
        self.workers = [
            Worker(ctx, name=base if i == 0 else f"{base}#{i + 1}", lease_s=lease_s)
            for i in range(concurrency)
        ]

    @property
    def applied(self) -> int:
        return sum(w.applied for w in self.workers)

    async def run(self) -> None:
        await asyncio.gather(*(w.run() for w in self.workers))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit)

    def handle_exit(self) -> None:
        for w in self.workers:
            w.handle_exit()
