"""Claims events from the durable `events` collection and applies them.

A claim is a lease: `find_one_and_update` marks the oldest claimable event with this worker's
name and a deadline. If the worker dies, the lease expires and another worker (or this one,
restarted) takes the event again; handlers are idempotent, so a second application is harmless.
A failing event is retried with exponential backoff and parked as `dead` after MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from datetime import timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

from app.context import AppContext
from app.events import apply_event
from app.models import Event, utcnow
from app.outbox import STAGED_GRACE_S

log = logging.getLogger("timeline.worker")

# An event whose worker has not finished within this time is presumed abandoned. A fan-out to
# 5,000 friends takes well under a second, so a minute is ample and a crash costs a minute.
LEASE_S = 60
# A poison event is parked after this many attempts (with backoff, ~2 minutes in all).
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
# Without a wake-up from this process, look for events written by other processes this often.
POLL_INTERVAL_S = 0.2
# While the database is unreachable, wait this long between attempts.
OUTAGE_BACKOFF_S = 1.0


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


class Worker:
    def __init__(self, ctx: AppContext, *, name: str | None = None) -> None:
        self.ctx = ctx
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.should_exit = False
        self.applied = 0
        self.failed = 0

    def _claimable(self) -> dict[str, Any]:
        now = utcnow()
        return {
            "$or": [
                {"state": "pending", "lease_until": None},
                {"state": "pending", "lease_until": {"$lt": now}},
                {"state": "staged", "created_at": {"$lt": now - timedelta(seconds=STAGED_GRACE_S)}},
            ]
        }

    async def claim(self) -> dict[str, Any] | None:
        now = utcnow()
        doc: dict[str, Any] | None = await Event.get_pymongo_collection().find_one_and_update(
            self._claimable(),
            {
                "$set": {
                    "state": "pending",
                    "lease_until": now + timedelta(seconds=LEASE_S),
                    "lease_owner": self.name,
                },
                "$inc": {"attempts": 1},
            },
            sort=[("_id", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return doc

    async def process_one(self) -> bool:
        """Claim and apply one event. False when there was nothing to claim."""
        event = await self.claim()
        if event is None:
            return False
        events = Event.get_pymongo_collection()
        try:
            await apply_event(self.ctx.strategy, event)
        except Exception as exc:
            self.failed += 1
            dead = event["attempts"] >= MAX_ATTEMPTS
            log.warning("event %s (%s) failed: %r", event["_id"], event["kind"], exc)
            await events.update_one(
                {"_id": event["_id"], "lease_owner": self.name},
                {
                    "$set": {
                        "state": "dead" if dead else "pending",
                        "last_error": repr(exc)[:2000],
                        "lease_until": utcnow() + timedelta(seconds=backoff_s(event["attempts"])),
                    }
                },
            )
            return True
        await events.update_one(
            {"_id": event["_id"], "lease_owner": self.name},
            {"$set": {"state": "done", "done_at": utcnow(), "lease_until": None}},
        )
        self.applied += 1
        return True

    async def drain(self) -> int:
        """Apply events until none is claimable; returns how many were applied."""
        n = 0
        while await self.process_one():
            n += 1
        return n

    async def run(self) -> None:
        """Loop until `should_exit`; the event being applied is always finished first."""
        log.info("worker %s started (strategy %s)", self.name, self.ctx.strategy.name)
        last_report, applied_then = time.monotonic(), 0
        wake = self.ctx.events_recorded
        while not self.should_exit:
            try:
                worked = await self.process_one()
            except PyMongoError as exc:
                log.warning("database unavailable, backing off: %r", exc)
                await asyncio.sleep(OUTAGE_BACKOFF_S)
                continue
            if time.monotonic() - last_report >= 10 and self.applied != applied_then:
                rate = (self.applied - applied_then) / (time.monotonic() - last_report)
                log.info("applied %d events (%.1f/s)", self.applied, rate)
                last_report, applied_then = time.monotonic(), self.applied
            if not worked:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_INTERVAL_S)
        log.info("worker %s stopped after %d events", self.name, self.applied)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit)

    def handle_exit(self) -> None:
        self.should_exit = True
        self.ctx.events_recorded.set()
