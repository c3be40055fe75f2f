"""`python -m benchmarks run`: what each timeline strategy costs, side by side, in one run.

A thin command line over benchmarks.runner (the measurements), benchmarks.report (report.md and
the summary table) and benchmarks.plots (PNGs). See docs/benchmarks.md for what it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.storage.embedded import EmbeddedServer, EmbeddedServerError
from benchmarks import config as c
from benchmarks.config import RunConfig

# Width of the summary table when stdout is not a terminal (CI logs, files).
SUMMARY_WIDTH = 180
# `--shards`: MongoDB recommends far fewer shards than this; beyond it the simulation only
# repeats that every operation with many keys touches every shard.
MAX_SHARDS = 1024

DESCRIPTION = """\
Measure every timeline strategy on the same deterministic workload, each in its own database:
read latency (p50/p95/p99 of a first page of 20), index keys and documents examined per read
(explain executionStats), round trips per read (command monitoring), the winning plan, post
latency (as the API sees it, and until visible in every friend's timeline), documents and BSON
bytes written per post, documents touched by friend/unfriend, storage, and a sweep over readers
and authors with 10 to 5,000 friends. Baselines in the same run: naive_on_read (one query per
friend, merged in Python) and the floor (one indexed find of a ready page; raw insert_many).
Writes DIR/results.json, DIR/report.md, DIR/latency.png and DIR/scaling.png."""

EPILOG = """\
Counts (keys examined, round trips, documents written) transfer across machines and servers
with the same planner; times do not. The embedded SecantusDB's planner differs from mongod's
(see docs/benchmarks.md)."""


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("friend counts must be at least 1")
    return values


def _shard_counts(text: str) -> tuple[int, ...]:
    values = _csv_ints(text)
    if not values:
        raise argparse.ArgumentTypeError("give at least one shard count")
    if max(values) > MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SHARDS} shards")
    return values


def _strategies(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in c.BENCH_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(c.BENCH_NAMES)
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_workload_options(p: argparse.ArgumentParser) -> None:
    """The size and shape of the generated workload."""
    p.add_argument(
        "--users",
        type=_positive,
        metavar="N",
        help=f"ordinary users; one probe user per sweep level is added (default {c.FULL_USERS})",
    )
    p.add_argument(
        "--avg-friends",
        type=_positive,
        metavar="F",
        help="mean friend count of the Zipf-distributed (heavy-tailed) graph "
        f"(default {c.FULL_AVG_FRIENDS})",
    )
    p.add_argument(
        "--statuses",
        type=_positive,
        metavar="S",
        help=f"statuses loaded before measuring, spread over authors (default {c.FULL_STATUSES})",
    )
    p.add_argument(
        "--reads",
        type=_positive,
        metavar="R",
        help="timeline reads in the mix (a third are refreshes with `after`); one write "
        f"(post, delete, friend or unfriend) per {c.WRITE_EVERY} reads (default {c.FULL_READS})",
    )
    p.add_argument(
        "--sweep",
        type=_csv_ints,
        metavar="F1,F2,...",
        help="friend counts of the scaling sweep; each must be <= --users "
        f"(default {','.join(map(str, c.FULL_SWEEP))})",
    )
    p.add_argument(
        "--repeats",
        type=_positive,
        metavar="K",
        help=f"reads and posts per sweep level (default {c.FULL_REPEATS})",
    )
    p.add_argument("--seed", type=int, default=1, metavar="K", help="workload seed (default 1)")
    p.add_argument(
        "--timeline-max",
        type=_positive,
        default=1000,
        metavar="N",
        help="TIMELINE_MAX of every strategy (default 1000, the service default)",
    )


def _add_database_options(p: argparse.ArgumentParser) -> None:
    """Where the benchmark runs and what it keeps."""
    p.add_argument(
        "--mongodb-url",
        metavar="URL",
        help="a MongoDB to measure (databases <prefix>_<strategy> and <prefix>_floor are "
        "created, and dropped at the end unless --keep-data); "
        "default: an embedded SecantusDB in a temporary directory, started and stopped here",
    )
    p.add_argument(
        "--db-prefix",
        metavar="NAME",
        help="prefix of the benchmark's database names (default bench_s<seed>): "
        "<prefix>_<strategy> and <prefix>_floor",
    )
    p.add_argument(
        "--keep-data", action="store_true", help="do not drop the benchmark databases at the end"
    )
    p.add_argument(
        "--shards",
        type=_shard_counts,
        metavar="N[,N...]",
        help="also route every measured command through the shard plan (docs/scaling.md) with "
        "N shards each and report the shards each operation touches (default: not simulated)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks run",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run for CI (~1 minute on 2 cores): {c.QUICK_USERS} users, "
        f"{c.QUICK_STATUSES} statuses, {c.QUICK_READS} reads, sweep "
        f"{','.join(map(str, c.QUICK_SWEEP))}; explicit options still win",
    )
    p.add_argument(
        "--strategies",
        type=_strategies,
        metavar="A,B,C",
        help="strategies to measure, comma-separated (default: all, and the redis_sorted_set peer "
        f"when redis-server is installed: {','.join(c.BENCH_NAMES)})",
    )
    _add_workload_options(p)
    _add_database_options(p)
    return p


def config_from(args: argparse.Namespace) -> RunConfig:
    quick = bool(args.quick)

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    return RunConfig(
        strategies=args.strategies or c.BENCH_NAMES,
        users=pick(args.users, c.FULL_USERS, c.QUICK_USERS),
        avg_friends=pick(args.avg_friends, c.FULL_AVG_FRIENDS, c.QUICK_AVG_FRIENDS),
        statuses=pick(args.statuses, c.FULL_STATUSES, c.QUICK_STATUSES),
        reads=pick(args.reads, c.FULL_READS, c.QUICK_READS),
        sweep=pick(args.sweep, c.FULL_SWEEP, c.QUICK_SWEEP),
        repeats=pick(args.repeats, c.FULL_REPEATS, c.QUICK_REPEATS),
        check_max_friends=c.QUICK_CHECK_MAX_FRIENDS if quick else c.FULL_CHECK_MAX_FRIENDS,
        seed=args.seed,
        timeline_max=args.timeline_max,
        quick=quick,
        mongodb_url=args.mongodb_url,
        keep_data=args.keep_data,
        shards=args.shards or (),
    )


class RichPhases:
    """One progress bar per phase, kept on screen as a log of what ran and how long it took."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._last: Any = None

    def _finish_last(self) -> None:
        if self._last is not None:
            task = self.progress.tasks[self._last]
            self.progress.update(self._last, completed=task.total)

    def start(self, label: str, total: int) -> Callable[[int], None]:
        self._finish_last()
        task = self.progress.add_task(label, total=max(1, total))
        self._last = task

        def tick(n: int) -> None:
            self.progress.advance(task, n)

        return tick

    def note(self, text: str) -> None:
        self.progress.console.print(text)

    def close(self) -> None:
        self._finish_last()


async def _run(config: RunConfig, console: Console) -> dict[str, Any]:
    from benchmarks.runner import run  # imported late: --help stays fast

    phases = RichPhases(console)
    with phases.progress:
        try:
            if config.mongodb_url:
                return await run(config, config.mongodb_url, embedded=False, phases=phases)
            with tempfile.TemporaryDirectory(prefix="timeline-bench-") as tmp:
                console.print(f"starting the embedded server in {tmp}")
                with EmbeddedServer(Path(tmp) / "db", log_path=Path(tmp) / "server.log") as srv:
                    return await run(config, srv.url, embedded=True, phases=phases)
        finally:
            phases.close()


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    from benchmarks.goals import goals_json
    from benchmarks.plots import write_plots
    from benchmarks.report import render_report

    out.mkdir(parents=True, exist_ok=True)
    results["goals"] = goals_json(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = write_plots(results, out)
    (out / "report.md").write_text(render_report(results, [p.name for p in plots]))
    return [out / "results.json", out / "report.md", *plots]


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    config = config_from(args)
    if config.sweep and max(config.sweep) > config.users:
        parser().error(
            f"--users {config.users} is smaller than the sweep level {max(config.sweep)}"
        )
    config = replace(config, db_prefix=args.db_prefix or f"bench_s{config.seed}")
    console = Console(stderr=True)
    try:
        results = asyncio.run(_run(config, console))
    except EmbeddedServerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    results["meta"]["command"] = " ".join(["python -m benchmarks run", *argv])
    written = write_outputs(results, args.out)
    from benchmarks.report import summary_table

    # Piped output gets rich's 80 columns by default: too narrow for the table.
    Console(width=None if sys.stdout.isatty() else SUMMARY_WIDTH).print(summary_table(results))
    if "shards" in results:
        from benchmarks.shards_report import summary

        Console(width=None if sys.stdout.isatty() else SUMMARY_WIDTH).print(summary(results))
    for path in written:
        console.print(f"wrote {path}")
    failed = [n for n, chk in results["checks"].items() if chk["timelines_differing_from_truth"]]
    if failed:
        console.print(f"[red]derived data differed from the ground truth for: {', '.join(failed)}")
        return 1
    return 0
