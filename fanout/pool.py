"""Several claim-and-apply loops in one process (`timeline worker --concurrency`, and the
worker that `timeline serve` runs beside the API)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from pymongo.errors import PyMongoError

from app.context import AppContext
from fanout.claims import take_back
from fanout.fold import FoldPass
from fanout.housekeeping import Housekeeping
from fanout.worker import LEASE_S, Worker

log = logging.getLogger("timeline.worker")


class WorkerPool:
    """Several claim-and-apply loops in one process, each a Worker with its own name and leases,
    coordinating with each other exactly as separate processes do (author leases).

    An event's time is mostly spent waiting: about eight round trips, each fsynced by the
    embedded server, plus the API's requests queueing in front of them on a shared event loop.
    Loops that wait at the same time overlap those waits. Measured in a 50-client load run
    (docs/benchmarks.md): one worker process drained its backlog in a third of the load's
    duration, two in a twentieth.

    Beside the loops, the pool expires applied events and idempotency keys (fanout.housekeeping):
    wherever events are applied, expiry runs too. At start, each loop takes back what a dead
    predecessor of its name held (fanout.claims.take_back): a worker restarted under a stable
    `--name` does not wait a lease for its own in-hand event."""

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
        self.housekeeping = Housekeeping(ctx.store)
        # inbox_buckets' loose entries folded into chains (fanout.fold), beside the loops.
        self.fold = FoldPass(ctx)

    @property
    def applied(self) -> int:
        return sum(w.applied for w in self.workers)

    async def run(self) -> None:
        for w in self.workers:
            try:
                handed = await take_back(w.events, w.leases, w.name)
            except PyMongoError as exc:  # the leases then expire as usual; the loops back off
                log.warning("%s: could not take back its predecessor's leases: %r", w.name, exc)
                continue
            if handed:
                log.info("%s: took back %d events its predecessor held", w.name, handed)
        await asyncio.gather(
            *(w.run() for w in self.workers), self.housekeeping.run(), self.fold.run()
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit)

    def handle_exit(self) -> None:
        for w in self.workers:
            w.handle_exit()
        self.housekeeping.handle_exit()
        self.fold.handle_exit()
