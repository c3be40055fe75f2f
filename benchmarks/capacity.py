"""`python -m benchmarks load --sweep-rates a,b,c [--strategies s1,s2]`: the capacity curve.

For each strategy and each offered rate, a fresh service (own_service: the embedded database,
`--workers` worker processes) takes an open-loop load at that rate (benchmarks/load_open.py)
for --seconds; each point records the offered and achieved rates, API p99, post-to-visible lag
p99, the drain after the load, errors and the loss check. The *knee* of a strategy is the
highest offered rate whose lag p99 stays within KNEE_LAG_MS with nothing lost: past it the
worker falls behind and the lag grows with the run's length rather than with the rate.
Writes capacity.json and capacity.png to --out and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.plots import COLORS, DPI, MARKERS
from benchmarks.services import own_service

# The freshness bound: a post is visible to friends within 2 s at p99.
KNEE_LAG_MS = 2000.0
# Wide enough for the table's nine columns when the output is not a terminal (a log file).
CONSOLE_WIDTH = 120
# The comfort point: at this share of the knee rate, lag p99 should be within 1 s.
COMFORT_SHARE = 0.7


def knee(points: list[dict[str, Any]]) -> float | None:
    """The highest offered rate with lag p99 within KNEE_LAG_MS, no loss and no error."""
    good = [
        p["offered_ops_per_s"]
        for p in points
        if p["lag_p99_ms"] <= KNEE_LAG_MS and p["lost"] == 0 and p["errors"] == 0
    ]
    return max(good, default=None)


def _point(result: dict[str, Any], strategy: str) -> dict[str, Any]:
    keys = (
        "offered_ops_per_s",
        "achieved_ops_per_s",
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "lag_p50_ms",
        "lag_p99_ms",
        "lag_max_ms",
        "drain_s",
        "errors",
        "lost",
        "unexpected",
        "shed_ops",
        "seconds",
    )
    return {"strategy": strategy, **{k: result[k] for k in keys}}


def sweep(args: argparse.Namespace) -> int:
    """One open-loop load per strategy and rate (each on a fresh service), then capacity.json,
    capacity.png and the printed table; 0 unless a point lost or showed something unexpected."""
    points = _measure(args)
    out = _curve(args, points)
    (args.out / "capacity.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, args.out / "capacity.png")
    print_curve(out)
    return 0 if all(p["lost"] == 0 and p["unexpected"] == 0 for p in points) else 1


def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The swept points, strategy by strategy and rate by rate, each printed as it is measured
    (a long sweep shows its progress, and what it had if it is stopped)."""
    from benchmarks.load import drive

    points: list[dict[str, Any]] = []
    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        for rate in args.sweep_rates:
            with (
                tempfile.TemporaryDirectory(prefix="timeline-capacity-") as tmp,
                own_service(
                    Path(tmp), args.workers, args.concurrency, {"TIMELINE_STRATEGY": strategy}
                ) as url,
            ):
                result = asyncio.run(
                    drive(
                        url,
                        args.clients,
                        args.seconds,
                        args.max_requests,
                        args.seed,
                        args.timeline_max,
                        rate,
                    )
                )
            points.append(_point(result, strategy))
            print(json.dumps(points[-1]), flush=True)
    return points


def _comfort(
    points: list[dict[str, Any]], knees: dict[str, float | None]
) -> dict[str, dict[str, Any] | None]:
    """Per strategy, the swept point nearest below COMFORT_SHARE of its knee and its lag p99;
    None without a knee or without a point that low."""
    comfort = {}
    for s, k in knees.items():
        below = [
            p
            for p in points
            if p["strategy"] == s and k is not None and p["offered_ops_per_s"] <= COMFORT_SHARE * k
        ]
        top = max(below, key=lambda p: p["offered_ops_per_s"], default=None)
        comfort[s] = (
            None
            if top is None
            else {
                "offered_ops_per_s": top["offered_ops_per_s"],
                "lag_p99_ms": top["lag_p99_ms"],
            }
        )
    return comfort


def _curve(args: argparse.Namespace, points: list[dict[str, Any]]) -> dict[str, Any]:
    """capacity.json's content: the sweep's settings, its points, each strategy's knee and its
    comfort point."""
    strategies = list(dict.fromkeys(p["strategy"] for p in points))
    knees = {s: knee([p for p in points if p["strategy"] == s]) for s in strategies}
    return {
        "meta": {
            "seconds": args.seconds,
            "users": args.clients,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "knee_rule": f"highest offered rate with lag p99 <= {KNEE_LAG_MS:.0f} ms, "
            "nothing lost, no errors",
        },
        "points": points,
        "knee_ops_per_s": knees,
        # The swept point nearest below COMFORT_SHARE of each knee, and its lag p99.
        "at_70_percent_of_knee": _comfort(points, knees),
    }


def print_curve(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="capacity: open-loop offered rate against what the service did")
    for col in (
        "strategy",
        "offered/s",
        "achieved/s",
        "API p99 ms",
        "lag p99 ms",
        "drain s",
        "errors",
        "lost",
        "",
    ):
        table.add_column(col, justify="right")
    for p in out["points"]:
        mark = "knee" if out["knee_ops_per_s"][p["strategy"]] == p["offered_ops_per_s"] else ""
        table.add_row(
            p["strategy"],
            f"{p['offered_ops_per_s']:g}",
            f"{p['achieved_ops_per_s']:g}",
            f"{p['p99_ms']:g}",
            f"{p['lag_p99_ms']:g}",
            f"{p['drain_s']:g}",
            str(p["errors"]),
            str(p["lost"]),
            mark,
        )
    Console(width=CONSOLE_WIDTH).print(table)


def plot(out: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for strategy, knee_rate in out["knee_ops_per_s"].items():
        pts = [p for p in out["points"] if p["strategy"] == strategy]
        xs = [p["offered_ops_per_s"] for p in pts]
        style = {"color": COLORS.get(strategy), "marker": MARKERS.get(strategy, "o")}
        axes[0].plot(xs, [p["achieved_ops_per_s"] for p in pts], label=strategy, **style)
        axes[1].plot(xs, [p["lag_p99_ms"] for p in pts], label=f"{strategy} lag p99", **style)
        axes[1].plot(xs, [p["p99_ms"] for p in pts], ls="--", label=f"{strategy} API p99", **style)
        axes[2].plot(xs, [p["drain_s"] for p in pts], label=strategy, **style)
        if knee_rate is not None:
            for ax in axes:
                ax.axvline(knee_rate, color=style["color"], ls=":", alpha=0.7)
    top = max((p["offered_ops_per_s"] for p in out["points"]), default=1)
    axes[0].plot([0, top], [0, top], "k:", label="achieved = offered")
    axes[0].set_title("Achieved against offered (ops/s)")
    axes[1].axhline(KNEE_LAG_MS, color="gray", ls=":", label="2 s")
    axes[1].set_yscale("log")
    axes[1].set_title("p99: post-to-visible lag and API latency (ms)")
    axes[2].set_title("Drain after the load (s)")
    for ax in axes:
        ax.set_xlabel("offered ops/s (dotted verticals: each strategy's knee)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    meta = out["meta"]
    fig.suptitle(
        f"Capacity, open loop: {meta['seconds']} s per point, {meta['users']} users, "
        f"{meta['workers']} worker processes",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
