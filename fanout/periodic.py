"""A pass beside the workers (fanout.pool) run at once and then every interval, jittered, until
asked to stop: the housekeeping's expiry (fanout/housekeeping.py) and inbox_buckets' fold
(fanout/fold.py). A failed pass is logged and skipped, never ends the loop: a bug or an outage
in a pass must not stop the claim loops beside it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

from pymongo.errors import PyMongoError

from app.storage.models import utcnow

# Each process's interval is jittered by up to this fraction, so that the passes of several
# worker processes started together drift apart instead of running side by side.
INTERVAL_JITTER = 0.2


async def run_periodically(
    pass_once: Callable[[], Awaitable[object]],
    *,
    name: str,
    log: logging.Logger,
    interval_s: float,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """Run `pass_once` now and then every `interval_s` (± INTERVAL_JITTER) until `stop` is set."""
    while not stop.is_set():
        try:
            await pass_once()
        except PyMongoError as exc:
            log.warning("%s skipped a pass (database unavailable): %r", name, exc)
        except Exception:  # a bug here must not stop the claim loops beside it
            log.exception("%s pass failed", name)
        wait = interval_s * (1 + rng.uniform(-INTERVAL_JITTER, INTERVAL_JITTER))
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            pass


class PeriodicPass:
    """The loop's state for a pass class: `run()` runs `run_once()` at once and then every
    `interval_s` (jittered) until `handle_exit()`; `passes` counts the passes run, `clock` is
    what a pass takes for now (a fake in tests). Subclasses set `name` and `run_once`."""

    name = "pass"

    def __init__(
        self,
        *,
        interval_s: float,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.passes = 0
        self._stop = asyncio.Event()

    async def run_once(self) -> object:
        raise NotImplementedError

    async def run(self) -> None:
        await run_periodically(
            self.run_once,
            name=self.name,
            log=logging.getLogger(f"timeline.{self.name}"),
            interval_s=self.interval_s,
            rng=self.rng,
            stop=self._stop,
        )

    def handle_exit(self) -> None:
        self._stop.set()
