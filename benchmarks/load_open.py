"""The open-loop mode of `python -m benchmarks load` (`--rate`): operations arrive at a fixed
rate whatever the answers take, as independent users' actions do, so an overloaded service is
offered the same load as a fast one and its backlog shows (a closed loop of N clients slows
down with the service and hides it: "coordinated omission").

Arrivals are a seeded Poisson stream at `rate` operations a second; each is one action of the
mix (benchmarks/load_clients.MIX) by a random user, run as its own task. At most MAX_IN_FLIGHT
operations wait at once: past that an arrival is dropped and counted as `shed`, so the driver
stays bounded however far the service is past its capacity, and achieved < offered says so.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from benchmarks.load_clients import MIX, Run, act

# Far above what a healthy service has waiting at the rates swept here (rate x p99 latency:
# 100/s x 0.5 s = 50); past it the service is the bottleneck, not the driver.
MAX_IN_FLIGHT = 500


@dataclass
class OpenLoop:
    offered: int = 0  # arrivals
    completed: int = 0
    shed: int = 0
    in_flight: int = 0

    async def run(self, run: Run, rate: float) -> None:
        """Until the run's deadline or max_requests; then waits for the operations in flight."""
        actions, weights = list(MIX), list(MIX.values())
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while True:
            next_at += run.rng.expovariate(rate)
            if next_at >= run.deadline or not run.more():
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.offered += 1
            if self.in_flight >= MAX_IN_FLIGHT:
                self.shed += 1
                continue
            action = run.rng.choices(actions, weights)[0]
            task = asyncio.create_task(self._one(run, action))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def _one(self, run: Run, action: str) -> None:
        self.in_flight += 1
        try:
            await act(run, run.rng.choice(run.users), action)
            self.completed += 1
        finally:
            self.in_flight -= 1
