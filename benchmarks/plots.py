"""The PNG plots of a run: latency per strategy, and cost versus friend count (log scales)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

DPI = 110
# One colour per strategy in every panel, whichever strategies a run measured.
COLORS = {
    "fanout_on_read": "tab:blue",
    "recipients_embedded": "tab:green",
    "receiver_copies": "tab:red",
    "hybrid": "tab:purple",
    "inbox_buckets": "tab:cyan",
    "naive_on_read": "tab:orange",
    "floor": "tab:gray",
}
MARKERS = {
    "fanout_on_read": "o",
    "recipients_embedded": "s",
    "receiver_copies": "^",
    "hybrid": "D",
    "inbox_buckets": "o",
}


def _bars(ax: Any, groups: Sequence[str], series: dict[str, list[float | None]]) -> None:
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, [v or 0 for v in values], width, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=15, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def latency_plot(results: dict[str, Any], path: Path) -> Path:
    strategies = results["strategies"]
    base = results["baselines"]
    names = list(strategies)
    read_names = [*names, *[n for n in ("naive_on_read",) if n in base]]
    reads = [strategies[n]["read"] if n in strategies else base[n]["read"] for n in read_names]
    floor = base.get("floor")
    if floor:
        read_names.append("floor")
        reads.append(floor["read"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    _bars(ax1, read_names, {p: [r[f"{p}_ms"] for r in reads] for p in ("p50", "p95", "p99")})
    ax1.set_yscale("log")
    ax1.set_ylabel("ms (log)")
    ax1.set_title(f"Timeline first page (limit {results['meta']['page_limit']})")
    writes = [strategies[n]["write"] for n in names]
    _bars(
        ax2,
        names,
        {
            "post p50 (API)": [w["p50_ms"] for w in writes],
            "visible p50": [w["visible_p50_ms"] for w in writes],
            "visible p99": [w["visible_p99_ms"] for w in writes],
        },
    )
    ax2.set_ylabel("ms")
    ax2.set_title("Post: API latency and until visible to every friend")
    meta = results["meta"]
    fig.suptitle(f"{meta['backend']} {meta['backend_version']}, {meta['users']} users", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _lines(ax: Any, rows: list[dict[str, Any]], key: str, title: str, ylabel: str) -> None:
    for name in dict.fromkeys(r["strategy"] for r in rows):
        pts = [(r["friends"], r[key]) for r in rows if r["strategy"] == name and r.get(key)]
        if pts:
            ax.plot(
                *zip(*pts, strict=True),
                marker=MARKERS.get(name, "D"),
                color=COLORS.get(name),
                label=name,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("friends")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def scaling_plot(results: dict[str, Any], path: Path) -> Path:
    rows = results["scaling"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    _lines(axes[0][0], rows, "read_keys_examined", "Index keys examined per page", "keys")
    _lines(axes[0][1], rows, "read_round_trips", "Round trips per page", "commands")
    _lines(axes[0][2], rows, "read_p50_ms", "Page read p50", "ms")
    _lines(axes[1][0], rows, "write_docs", "Documents written per post (with fan-out)", "docs")
    _lines(axes[1][1], rows, "write_bytes", "BSON bytes written per post", "bytes")
    _lines(axes[1][2], rows, "write_visible_p50_ms", "Post until visible, p50", "ms")
    # Each strategy's level has its own floor (timed beside its posts): the line is their median.
    floors: dict[int, list[float]] = {}
    for r in rows:
        if r.get("write_floor_ms"):
            floors.setdefault(r["friends"], []).append(r["write_floor_ms"])
    if floors:
        xs = sorted(floors)
        ys = [statistics.median(floors[x]) for x in xs]
        axes[1][2].plot(xs, ys, "k--", label="floor: insert_many of friends+1 (median)")
        axes[1][2].legend(fontsize=7)
    meta = results["meta"]
    fig.suptitle(f"Cost versus friend count ({meta['backend']} {meta['backend_version']})")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    paths = [latency_plot(results, out / "latency.png")]
    if results["scaling"]:
        paths.append(scaling_plot(results, out / "scaling.png"))
    if "shards" in results:
        from benchmarks.shards_report import plot

        paths.append(plot(results, out / "shards.png"))
    return paths
