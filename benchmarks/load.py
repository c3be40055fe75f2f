"""`python -m benchmarks load`: HTTP load against a running `timeline serve`, then a loss check.

N clients (one user each) run a mixed workload over HTTP on loopback for S seconds or until
--max-requests: read the timeline (first page, then refreshes with `after`), post statuses with
an Idempotency-Key, befriend and unfriend, delete some of their own statuses, read a friend's
statuses. Then it waits until `/health` reports no pending events and checks, for every user,
that every status acknowledged with 201 and not deleted, whose author is the user or a current
friend, is in the user's timeline (within the newest TIMELINE_MAX of them). Anything missing is
`lost`; anything there that should not be (deleted, or not a friend's) is `unexpected`.

While the load runs, a probe (benchmarks/probe.py) measures post-to-visible lag: a dedicated
author posts every half second and a friend polls their timeline; lag p50/p99 are reported with
the drain time (how long the worker needed after the load to apply every event).

With --rate R the load is open-loop instead (benchmarks/load_open.py): R operations a second
arrive whatever the answers take, from --clients users; with --sweep-rates a,b,c (and
--strategies) it runs one such load per rate and strategy, each on a fresh service, and prints
the capacity curve (benchmarks/capacity.py).

Without --url it starts its own service (benchmarks/services.py: `timeline serve` with its
in-process worker, or with --workers N, `timeline db` + `timeline serve --no-worker` + N
`timeline worker` processes), embedded database in a temporary directory, and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load_clients import Run, Stats, client_loop, create_user, verify
from benchmarks.load_open import OpenLoop
from benchmarks.probe import Probe
from benchmarks.services import own_service
from benchmarks.stats import percentile

DEFAULT_CLIENTS = 10
DEFAULT_SECONDS = 10.0
# A hard cap on requests, so that a very fast server still makes a bounded run.
DEFAULT_MAX_REQUESTS = 200_000
# The service's default TIMELINE_MAX; pass --timeline-max when the server runs with another.
DEFAULT_TIMELINE_MAX = 1000
# How long to wait for the worker to apply every event after the load stops (a hang bound).
DRAIN_TIMEOUT_S = 600.0
# Per request: far above any healthy latency; a request slower than this counts as an error.
REQUEST_TIMEOUT_S = 60.0
# Open loop: connections the driver may hold (requests beyond wait in httpx's pool, which is
# part of the latency a client sees past the knee).
OPEN_LOOP_CONNECTIONS = 200


async def wait_drained(client: httpx.AsyncClient) -> float:
    start = time.monotonic()
    while True:
        r = await client.get("/health")
        if r.status_code == 200 and r.json()["pending_events"] == 0:
            return time.monotonic() - start
        if time.monotonic() - start > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"events still pending after {DRAIN_TIMEOUT_S}s: {r.text}")
        await asyncio.sleep(0.2)


def _pct(values: list[float], p: float, digits: int) -> float:
    """benchmarks.stats.percentile, rounded; 0.0 without samples (the field stays a number)."""
    value = percentile(values, p)
    return 0.0 if value is None else round(value, digits)


async def befriend_probe(run: Run, prefix: str) -> Probe:
    """The probe's two users, friends before the load starts (benchmarks/probe.py)."""
    tokens = []
    for who in ("author", "reader"):
        r = await run.call("probe_setup", "POST", "/users", json={"handle": f"{prefix}_{who}"})
        tokens.append(r.json()["token"] if r is not None else "")
    author, reader = ({"Authorization": f"Bearer {t}"} for t in tokens)
    requested = await run.call(
        "probe_setup", "POST", "/friend-requests", json={"to": f"{prefix}_reader"}, headers=author
    )
    accepted = await run.call(
        "probe_setup", "POST", f"/friend-requests/{prefix}_author/accept", headers=reader
    )
    if requested is None or accepted is None:
        raise RuntimeError(f"could not befriend the probe's users: {dict(run.stats.errors)}")
    return Probe(author, reader)


def _lag_figures(probe: Probe) -> dict[str, Any]:
    """How long the probe's posts took to show in its reader's timeline (milliseconds)."""
    lags = sorted(x * 1000 for x in probe.lags_s)
    lags_sent = sorted(x * 1000 for x in probe.lags_sent_s)
    return {
        "lag_p50_ms": _pct(lags, 50, 1),
        "lag_p99_ms": _pct(lags, 99, 1),
        "lag_max_ms": round(lags[-1], 1) if lags else 0.0,
        "lag_at_read_sent_p50_ms": _pct(lags_sent, 50, 1),
        "lag_at_read_sent_p99_ms": _pct(lags_sent, 99, 1),
        "lag_samples": len(lags),
    }


async def drive(
    url: str,
    clients: int,
    seconds: float,
    max_requests: int,
    seed: int,
    timeline_max: int,
    rate: float | None = None,
) -> dict[str, Any]:
    """A closed loop of `clients` clients, or with `rate` an open loop at that many operations
    a second by `clients` users."""
    connections = clients + 2 if rate is None else OPEN_LOOP_CONNECTIONS
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        run = Run(
            client,
            Stats(),
            deadline=float("inf"),
            max_requests=max_requests,
            rng=random.Random(seed),
        )
        prefix = f"l{uuid.uuid4().hex[:8]}"
        run.users = list(
            await asyncio.gather(*(create_user(run, prefix, i) for i in range(clients)))
        )
        probe = await befriend_probe(run, prefix)
        open_loop = OpenLoop()
        elapsed, drain_s = await _load_and_drain(run, probe, open_loop, seconds, rate)
        check = await verify(run, timeline_max)
    return {
        "url": url,
        "clients": clients,
        **_figures(run, probe, check, elapsed, drain_s),
        "mode": "closed" if rate is None else "open",
        "offered_ops_per_s": rate,
        "achieved_ops_per_s": round(open_loop.completed / elapsed, 1) if rate else None,
        "offered_ops": open_loop.offered,
        "shed_ops": open_loop.shed,
    }


async def _load_and_drain(
    run: Run, probe: Probe, open_loop: OpenLoop, seconds: float, rate: float | None
) -> tuple[float, float]:
    """The load for `seconds` (closed loop, or `open_loop` at `rate`) with the probe posting and
    polling, then the wait until the worker applied every event; returns the load's elapsed
    seconds and the drain's. The probe's poll has ended (or been cancelled) on return."""
    start = time.monotonic()
    run.deadline = start + seconds
    polling = asyncio.create_task(probe.poll(run.call))
    try:
        await asyncio.gather(
            probe.post_until(run.call, run.deadline),
            *(
                [open_loop.run(run, rate)]
                if rate is not None
                else [client_loop(run, u) for u in run.users]
            ),
        )
        elapsed = time.monotonic() - start
        drain_s = await wait_drained(run.client)
        await probe.look(run.call)  # a last look after the drain, in case the poll slept
        probe.posting = False
        await asyncio.wait_for(polling, timeout=REQUEST_TIMEOUT_S)
    finally:
        polling.cancel()
    return elapsed, drain_s


def _figures(
    run: Run, probe: Probe, check: dict[str, int], elapsed: float, drain_s: float
) -> dict[str, Any]:
    """The run's requests, errors, loss check, API latency, probe lag and drain, as reported."""
    stats = run.stats
    latencies = sorted(stats.latencies_ms)
    return {
        "seconds": round(elapsed, 3),
        "requests": stats.requests,
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(stats.errors),
        # A probe post never seen after the drain is lost like any other.
        "lost": check["lost"] + probe.unseen,
        "unexpected": check["unexpected"],
        "checked_pairs": check["checked_pairs"] + len(probe.lags_s) + probe.unseen,
        "statuses_acknowledged": len(run.acknowledged) + len(run.deleted),
        "statuses_deleted": len(run.deleted),
        "req_per_s": round(stats.requests / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": _pct(latencies, 50, 2),
        "p99_ms": _pct(latencies, 99, 2),
        **_lag_figures(probe),
        "drain_s": round(drain_s, 3),
        "drain_share": round(drain_s / elapsed, 3) if elapsed > 0 else 0.0,
        "probe_requests": stats.probe_requests,
        "by_action": dict(stats.by_action),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, checked: every combination it returns is one `main` can run; rates of
    --sweep-rates are parsed into a list of floats."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks load",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_load_args(p)
    _add_service_args(p)
    p.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    _add_open_loop_args(p)
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="directory for load.json")
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def _add_load_args(p: argparse.ArgumentParser) -> None:
    """What the load is: its service, clients, length, request cap and the loss check's
    TIMELINE_MAX."""
    p.add_argument("--url", default=None, help="a running service (default: start one)")
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="load duration")
    p.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        help="stop after this many requests even if time remains",
    )
    p.add_argument(
        "--timeline-max",
        type=int,
        default=DEFAULT_TIMELINE_MAX,
        help="the server's TIMELINE_MAX (for the loss check)",
    )


def _add_service_args(p: argparse.ArgumentParser) -> None:
    """How the service started without --url runs its worker: in-process, or in processes."""
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0: `timeline serve` with its in-process worker (default); N: `timeline db`, "
        "`timeline serve --no-worker` and N `timeline worker` processes (not with --url)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="with --workers: `timeline worker --concurrency` of each worker process (default 1)",
    )


def _add_open_loop_args(p: argparse.ArgumentParser) -> None:
    """The open loop at one rate, or the capacity sweep over rates and strategies."""
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: operations per second, arriving whatever the answers take "
        "(--clients is then the number of users)",
    )
    p.add_argument(
        "--sweep-rates",
        default=None,
        help="comma-separated rates: one open-loop load per rate (and strategy), each on a "
        "fresh service; prints the capacity curve and writes capacity.json/png",
    )
    p.add_argument(
        "--strategies",
        default="receiver_copies",
        help="with --sweep-rates: comma-separated TIMELINE_STRATEGY values (receiver_copies)",
    )


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits through `p.error` on a combination that cannot run; parses --sweep-rates in place."""
    if args.clients < 2:
        p.error("--clients must be at least 2 (friendships need two users)")
    if args.workers < 0:
        p.error("--workers must be 0 or more")
    if args.concurrency < 1 or (args.concurrency > 1 and not args.workers):
        p.error("--concurrency must be at least 1, and needs --workers")
    if args.workers and args.url:
        p.error("--workers starts its own service: not with --url")
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be more than 0")
    if args.sweep_rates is not None:
        try:
            args.sweep_rates = [float(x) for x in args.sweep_rates.split(",") if x.strip()]
        except ValueError:
            p.error("--sweep-rates: comma-separated numbers, e.g. 10,20,40")
        if not args.sweep_rates or min(args.sweep_rates) <= 0 or args.url or args.rate:
            p.error("--sweep-rates: rates above 0; starts its own services (no --url, --rate)")


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    who = (
        f"{result['clients']} clients"
        if result["mode"] == "closed"
        else f"{result['offered_ops_per_s']} ops/s offered by {result['clients']} users"
    )
    table = Table(title=f"load: {who} x {result['seconds']} s ({result['workers']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in (
        "requests",
        "errors",
        "lost",
        "unexpected",
        "checked_pairs",
        "statuses_acknowledged",
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "lag_p50_ms",
        "lag_p99_ms",
        "lag_max_ms",
        "lag_at_read_sent_p50_ms",
        "lag_at_read_sent_p99_ms",
        "lag_samples",
        "drain_s",
        "drain_share",
        "achieved_ops_per_s",
        "shed_ops",
    ):
        table.add_row(key, str(result[key]))
    Console().print(table)
    if result["error_kinds"]:
        Console().print(f"errors: {result['error_kinds']}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep_rates is not None:
        from benchmarks.capacity import sweep

        return sweep(args)

    def go(url: str) -> dict[str, Any]:
        return asyncio.run(
            drive(
                url,
                args.clients,
                args.seconds,
                args.max_requests,
                args.seed,
                args.timeline_max,
                args.rate,
            )
        )

    if args.url:
        result = go(args.url.rstrip("/"))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="timeline-load-") as tmp,
            own_service(Path(tmp), args.workers, args.concurrency) as url,
        ):
            result = go(url)
        result["url"] = "own timeline serve (embedded database)"
    result["workers"] = (
        "the service's own"
        if args.url
        else f"{args.workers} worker process(es) x {args.concurrency}"
        if args.workers
        else "in-process worker"
    )
    (args.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0 if result["errors"] == 0 and result["lost"] == 0 and result["unexpected"] == 0 else 1
