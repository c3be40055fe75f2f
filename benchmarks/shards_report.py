"""What `benchmarks run --shards` adds to the report, the terminal and the plots: shards touched
per operation for each shard count, and where a big author's post writes its documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks.report import fmt, table

# Operation kinds of the mix, in the order the table shows them.
KINDS = ("read", "refresh", "post", "delete", "friend", "unfriend")


def _rows(results: dict[str, Any]) -> list[list[Any]]:
    sh = results["shards"]
    rows: list[list[Any]] = []
    for name, per_count in sh["strategies"].items():
        big = sh["big_author"].get(name, {})
        for n in sh["counts"]:
            row = per_count[str(n)]
            b = big.get(str(n), {})
            rows.append(
                [
                    name,
                    n,
                    *[row.get(k) for k in KINDS],
                    row.get("broadcasts_per_read"),
                    row.get("outbox_shards_per_post"),
                    b.get("read_shards"),
                    b.get("post_shards"),
                    b.get("post_docs_written"),
                    b.get("post_largest_shard_share"),
                ]
            )
    return rows


def _headers(results: dict[str, Any]) -> list[str]:
    bigs: list[dict[str, Any]] = list(results["shards"]["big_author"].values())
    friends = bigs[0].get("friends", "?") if bigs else "?"
    return [
        "strategy",
        "shards",
        *[f"{k}: shards" for k in KINDS],
        "broadcasts/read",
        "outbox shards/post",
        f"{friends}-friend read: shards",
        f"{friends}-friend post: shards",
        f"{friends}-friend post: docs",
        f"{friends}-friend post: largest shard share",
    ]


def section(results: dict[str, Any]) -> str:
    """The markdown section of report.md."""
    return (
        "## Sharded: shards touched per operation (simulated)\n\n"
        "Every command of the measured operations routed as a mongos would under the shard plan "
        "(app/storage/sharding.py, docs/scaling.md), MongoDB's hashed-key hash, N equal chunks. "
        "Mix "
        "operations are means over the mix (a post, delete, friend or unfriend includes the "
        "worker's handlers); the outbox's own commands (events, leases) are counted apart. The "
        "big author's share is the largest fraction of its posts' documents that one shard "
        "writes.\n\n" + table(_headers(results), _rows(results))
    )


def summary(results: dict[str, Any]) -> Table:
    t = Table(title="Shards touched per operation (simulated routing)")
    for h in _headers(results):
        t.add_column(h, justify="left" if h == "strategy" else "right")
    for row in _rows(results):
        t.add_row(*[fmt(v) for v in row])
    return t


# Strategies often touch the same number of shards: distinct line styles and marker sizes keep
# overlapping lines visible.
STYLES = {
    "fanout_on_read": ("-", 9),
    "recipients_embedded": ("--", 6),
    "receiver_copies": ("-.", 4),
    "hybrid": (":", 7),
}


def _panel(ax: Any, counts: list[int], series: dict[str, list[Any]], title: str) -> None:
    from benchmarks.plots import COLORS, MARKERS

    for name, ys in series.items():
        if any(y is not None for y in ys):
            style, size = STYLES.get(name, (":", 5))
            ax.plot(
                counts,
                [y or 0 for y in ys],
                linestyle=style,
                marker=MARKERS.get(name, "D"),
                markersize=size,
                color=COLORS.get(name),
                label=name,
            )
    ax.plot(counts, counts, "k:", linewidth=0.8, label="every shard")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(counts)
    ax.set_xticklabels([str(n) for n in counts])
    ax.set_xlabel("shards (N)")
    ax.set_ylabel("shards touched (mean)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from benchmarks.plots import DPI

    sh = results["shards"]
    counts: list[int] = sh["counts"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    mix = sh["strategies"]
    mix_panels = [
        ("read", "Page read (mix)"),
        ("post", "Post with fan-out (mix)"),
        ("friend", "Friend with backfill (mix)"),
    ]
    for ax, (kind, title) in zip(axes[0], mix_panels, strict=True):
        series = {n: [pc[str(c)].get(kind) for c in counts] for n, pc in mix.items()}
        _panel(ax, counts, series, title)
    big = sh["big_author"]
    bigs: list[dict[str, Any]] = list(big.values())
    friends = bigs[0].get("friends", "?") if bigs else "?"
    big_panels = [
        ("read_shards", f"Page read, reader with {friends} friends"),
        ("post_shards", f"Post, author with {friends} friends"),
    ]
    for ax, (key, title) in zip(axes[1][:2], big_panels, strict=True):
        series = {n: [b.get(str(c), {}).get(key) for c in counts] for n, b in big.items()}
        _panel(ax, counts, series, title)
    share = axes[1][2]
    series = {
        n: [b.get(str(c), {}).get("post_largest_shard_share") for c in counts]
        for n, b in big.items()
    }
    _panel(share, counts, series, f"Largest per-shard share of a {friends}-friend post's writes")
    share.lines[-1].remove()  # "every shard" means nothing for a share
    share.plot(counts, [1 / c for c in counts], "k:", linewidth=0.8, label="1/N (even spread)")
    share.set_ylabel("fraction of the post's documents")
    share.legend(fontsize=7)
    fig.suptitle("Shards touched per operation versus cluster size (simulated routing)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
