"""The faults of a soak run, on a schedule, and how long the service took to recover from each.

Three kinds, cycled: SIGKILL a worker (started again after WORKER_RESTART_DELAY_S, as a process
supervisor would), SIGKILL the API process (started again at once on the same port), and
SIGKILL the embedded database server under `timeline db` (which restarts it on the same port:
entrypoints/supervise.py). A fault is *recovered* when the service answers normally again: the
API's /health is 200 (it pings the database) and a killed worker's replacement runs. How long
the backlog then takes to be fresh again is
recorded beside it (`fresh_s`: until no event recorded before the recovery is still waiting):
after a worker's SIGKILL, the authors it held wait for its leases to expire (`--lease-seconds`,
30 s by default), by design; after a database restart, so does an event a worker was applying
when the connection broke (docs/benchmarks.md, "Soak").
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.soak_cluster import WORKER_RESTART_DELAY_S, Cluster, health

log = logging.getLogger("benchmarks.soak")

KINDS = ("worker", "api", "database")
# One round of the three faults per this much run time (at least one round in any run).
ROUND_S = 15 * 60.0
# The default worker lease (fanout.worker.LEASE_S): what a killed worker strands waits this long.
QUIET_END_S = 30.0
# Requests answered 5xx or not at all count against the service only outside a fault's window:
# from the fault to its recovery plus this (clients' connections and the driver's pool settle).
FAULT_GRACE_S = 5.0
# The freshness the soak holds the service to (the issue: lag p99 within 2 s).
LAG_TARGET_S = 2.0
# Recovery is looked for this often, and given up on after this long (then reported as such).
POLL_S = 0.25
RECOVERY_LIMIT_S = 300.0


@dataclass
class Fault:
    kind: str
    at_s: float  # since the start of the load
    recovered_s: float | None = None  # from the fault
    fresh_s: float | None = None  # from the fault until no event from before recovery waits
    detail: str = ""

    @property
    def window(self) -> tuple[float, float]:
        end = self.recovered_s if self.recovered_s is not None else RECOVERY_LIMIT_S
        return (self.at_s, self.at_s + end + FAULT_GRACE_S)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_s": round(self.at_s, 2),
            "recovered_s": None if self.recovered_s is None else round(self.recovered_s, 2),
            "fresh_s": None if self.fresh_s is None else round(self.fresh_s, 2),
            "window_s": [round(x, 2) for x in self.window],
            "detail": self.detail,
        }


def schedule(seconds: float) -> list[tuple[float, str]]:
    """Fault times (seconds into the load) and kinds: rounds of the three kinds spread evenly,
    none at the very start (warm-up), and the last at least QUIET_END_S (or a third of a short
    run) before the end, so that what it strands for a lease has run out by the final drain."""
    rounds = max(1, round(seconds / ROUND_S))
    n = rounds * len(KINDS)
    span = seconds - min(QUIET_END_S, seconds / 3)
    return [(span * (i + 1) / (n + 1), KINDS[i % len(KINDS)]) for i in range(n)]


async def inject(cluster: Cluster, kind: str, at_s: float, workers: int, index: int) -> Fault:
    fault = Fault(kind, at_s)
    start = time.monotonic()
    if kind == "worker":
        name = f"worker-{index % workers + 1}"
        fault.detail = name
        cluster.kill(name)
        await asyncio.sleep(WORKER_RESTART_DELAY_S)
        await asyncio.to_thread(cluster.start_worker, name)
    elif kind == "api":
        cluster.kill("api")
        await asyncio.to_thread(cluster.start_api)
    else:
        pid = cluster.kill_db_server()
        fault.detail = f"database server pid {pid}"
        # /health may still answer from a connection the driver has not yet found broken:
        # wait until the server's replacement is up (a new pid) before looking.
        while cluster.db_server_pid() in (pid, None):
            if time.monotonic() - start > RECOVERY_LIMIT_S:
                return fault
            await asyncio.sleep(POLL_S)
    while time.monotonic() - start < RECOVERY_LIMIT_S:
        state = await asyncio.to_thread(health, cluster.url)
        now = time.monotonic() - start
        if state is not None:
            if fault.recovered_s is None:
                fault.recovered_s = now
            # Fresh again once no event recorded before the recovery is still waiting: the
            # oldest waiting event is younger than the time since the recovery.
            age = state.get("oldest_pending_age_s")
            if age is None or float(str(age)) < now - fault.recovered_s:
                fault.fresh_s = now
                break
        await asyncio.sleep(POLL_S)
    log.info("fault %s at %.0f s: %s", kind, at_s, fault.as_dict())
    return fault


async def run_faults(
    cluster: Cluster,
    started: float,
    seconds: float,
    workers: int,
    faults: list[Fault],
    stop: asyncio.Event,
) -> None:
    """Inject the scheduled faults one after the other (appending to `faults`), until `stop`
    (a fault under way is always seen through: its process restarted, its recovery timed)."""
    for i, (at_s, kind) in enumerate(schedule(seconds)):
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, started + at_s - time.monotonic()))
            return
        except TimeoutError:
            pass
        faults.append(await inject(cluster, kind, time.monotonic() - started, workers, i // 3))
