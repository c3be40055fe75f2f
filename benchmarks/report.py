"""report.md (tables and conclusions computed from the numbers) and the terminal summary."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from benchmarks.conclusions import conclusions


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def mb(nbytes: int | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 1e6:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One column of a report table: its header and how a row (a results.json object) fills it."""

    header: str
    value: Callable[[Row], Any]


def key(*path: str) -> Callable[[Row], Any]:
    """The value at `path` in a row (None where a level is missing)."""

    def get(row: Row) -> Any:
        value: Any = row
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return get


def code(*path: str) -> Callable[[Row], Any]:
    return lambda row: f"`{key(*path)(row)}`"


def render(columns: Sequence[Column], rows: Iterable[Row]) -> str:
    return table([c.header for c in columns], [[c.value(r) for c in columns] for r in rows])


# Where each strategy's page is read (hybrid: its entries side; its large friends' statuses are
# merged in from `statuses`).
DERIVED_COLLECTION = {"receiver_copies": "timeline_entries", "hybrid": "hybrid_entries"}


def _derived_collection(row: Row) -> str:
    return DERIVED_COLLECTION.get(row["name"], "statuses")


READ_COLUMNS = (
    Column("strategy", key("name")),
    Column("p50 ms", key("read", "p50_ms")),
    Column("p95 ms", key("read", "p95_ms")),
    Column("p99 ms", key("read", "p99_ms")),
    Column("keys examined", key("read", "keys_examined_per_read")),
    Column("docs examined", key("read", "docs_examined_per_read")),
    Column("round trips", key("read", "round_trips_per_read")),
    Column("winning plan", code("read", "plan")),
    Column("blocking SORT", key("read", "blocking_sort")),
    Column("p50 × floor", key("vs_floor", "read_p50")),
)
REFRESH_COLUMNS = (
    Column("strategy", key("name")),
    Column("p50 ms", key("read", "refresh", "p50_ms")),
    Column("p95 ms", key("read", "refresh", "p95_ms")),
    Column("round trips", key("read", "refresh", "round_trips_per_read")),
)
WRITE_COLUMNS = (
    Column("strategy", key("name")),
    Column("p50 ms", key("write", "p50_ms")),
    Column("p99 ms", key("write", "p99_ms")),
    Column("visible p50 ms", key("write", "visible_p50_ms")),
    Column("visible p99 ms", key("write", "visible_p99_ms")),
    Column("docs written", key("write", "docs_written_per_post")),
    Column("bytes written", key("write", "bytes_written_per_post")),
    Column(
        "docs by collection",
        lambda r: ", ".join(f"{k} {fmt(v)}" for k, v in r["write"]["docs_by_collection"].items()),
    ),
)
RECONCILE_COLUMNS = (
    Column("strategy", key("name")),
    Column("friend", key("reconcile", "docs_per_friend")),
    Column("unfriend", key("reconcile", "docs_per_unfriend")),
    Column("delete", key("reconcile", "docs_per_delete")),
    Column("friend visible p50 ms", key("reconcile", "operations", "friend", "visible_p50_ms")),
)
STORAGE_COLUMNS = (
    Column("strategy", key("name")),
    Column("data MB", lambda r: mb(r["storage"]["data_bytes"])),
    Column("index MB", lambda r: mb(r["storage"]["index_bytes"])),
    Column("derived collection", _derived_collection),
    Column(
        "its documents",
        lambda r: key("storage", "collections", _derived_collection(r), "count")(r),
    ),
)
SCALING_COLUMNS = (
    Column("friends", key("friends")),
    Column("strategy", key("strategy")),
    Column("keys examined", key("read_keys_examined")),
    Column("docs examined", key("read_docs_examined")),
    Column("round trips", key("read_round_trips")),
    Column("read p50 ms", key("read_p50_ms")),
    Column("plan", code("read_plan")),
    Column("docs written", key("write_docs")),
    Column("post p50 ms", key("write_p50_ms")),
    Column("visible p50 ms", key("write_visible_p50_ms")),
    Column("visible × floor", key("write_vs_floor")),
)


def _strategy_rows(results: dict[str, Any]) -> list[Row]:
    return [{"name": n, **s} for n, s in results["strategies"].items()]


def _read_rows(results: dict[str, Any]) -> list[Row]:
    rows = _strategy_rows(results)
    naive = results["baselines"].get("naive_on_read")
    if naive:
        rows.append({"name": "naive_on_read (baseline)", **naive})
    floor = results["baselines"].get("floor")
    if floor:
        rows.append(
            {"name": "floor (baseline)", "read": floor["read"], "vs_floor": {"read_p50": 1.0}}
        )
    return rows


def _sections(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    strategies = _strategy_rows(results)
    scaling = sorted(results["scaling"], key=lambda r: (r["friends"], r["strategy"]))
    return [
        "## Reads: first timeline page (limit {})\n\n".format(meta["page_limit"])
        + "Latency of `strategy.read()` (the database part of `GET /timeline`); keys and documents "
        "examined from `explain` (executionStats) of the page query for a sample of the readers; "
        "round trips counted by PyMongo command monitoring (the friend list included where a "
        "strategy needs it).\n\n" + render(READ_COLUMNS, _read_rows(results)),
        "### Refresh (`after` the newest item seen)\n\n" + render(REFRESH_COLUMNS, strategies),
        "## Writes: a post\n\n"
        "API latency is `app.domain.statuses.post` (status, the strategy's synchronous part and "
        "the "
        "outbox event, in one transaction); *visible* adds draining the fanout worker, after "
        "which every friend's timeline shows it (fanout_on_read's posts are visible at commit: "
        "its drain is outbox bookkeeping only). Documents and BSON bytes written count every "
        "write command of both parts (outbox and lease bookkeeping included: see the "
        "breakdown).\n\n" + render(WRITE_COLUMNS, strategies),
        "## Friendship changes and deletes: documents touched per operation\n\n"
        "Whole operation (request + accept, or unfriend, or delete) plus the worker's "
        "reconciliation.\n\n" + render(RECONCILE_COLUMNS, strategies),
        "## Storage (after loading and deriving, before the mix)\n\n"
        + render(STORAGE_COLUMNS, strategies),
        "## Scaling sweep: a reader/author with F friends\n\n"
        "Reads: one page of the probe user's timeline; writes: a post by the probe user, "
        "until visible to all F friends. *× floor* compares the time until visible with raw "
        "`insert_many` of F+1 ready-made entries for the same receivers, one right after each "
        "post in the strategy's database (the medians).\n\n" + render(SCALING_COLUMNS, scaling),
    ]


def render_report(results: dict[str, Any], plots: Sequence[str]) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    floor = results["baselines"].get("floor", {})
    head = [
        "# Timeline strategies: benchmark report",
        "",
        f"- command: `{meta.get('command', 'python -m benchmarks run')}`",
        f"- backend: {meta['backend']} {meta['backend_version']}",
        f"- machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}",
        f"- workload: {meta['users']:,} users, {meta['friendships']:,} friendships "
        f"(Zipf, mean {meta['avg_friends']} + probe users), {meta['statuses']:,} statuses, "
        f"{meta['reads']} reads and {meta['writes']} writes in the mix, seed {meta['seed']}, "
        f"TIMELINE_MAX {meta['timeline_max']}",
        f"- sweep: {', '.join(map(str, meta['sweep']))} friends, {meta['repeats']} repetitions",
        f"- floor: raw insert_many {fmt(floor.get('insert_many_entries_per_s'))} entries/s",
        f"- started {meta['started_at']}, took {meta.get('duration_s', '?')} s",
        "",
        "Counts (keys examined, round trips, documents written) transfer to any server with the "
        "same planner; times are this machine's and this backend's only.",
        "",
        "## Conclusions (computed from the numbers below)",
        "",
        *[f"- {line}" for line in conclusions(results)],
        "",
    ]
    from benchmarks.goals import section as goals_section

    body = [g for g in [goals_section(results)] if g] + _sections(results)
    if "shards" in results:
        from benchmarks.shards_report import section

        body.append(section(results))
    pics = ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n\n" + "\n".join(pics) + "\n"


def _summary_plan(row: Row) -> str:
    if "plan_text" in row:
        return str(row["plan_text"])
    read = row["read"]
    return str(read["plan"]) + (" (blocking SORT)" if read["blocking_sort"] else "")


def _summary_size(row: Row) -> str:
    if "storage" in row:
        return mb(row["storage"]["data_bytes"] + row["storage"]["index_bytes"])
    if "insert_many_entries_per_s" in row:
        return f"insert_many {fmt(row['insert_many_entries_per_s'])}/s"
    return "–"


SUMMARY_COLUMNS = (
    Column("strategy", key("name")),
    Column("read p50 ms", key("read", "p50_ms")),
    Column("read p99 ms", key("read", "p99_ms")),
    Column("keys/read", key("read", "keys_examined_per_read")),
    Column("round trips", key("read", "round_trips_per_read")),
    Column("plan", _summary_plan),
    Column("post p50 ms", key("write", "p50_ms")),
    Column("visible p99 ms", key("write", "visible_p99_ms")),
    Column("docs/post", key("write", "docs_written_per_post")),
    Column("bytes/post", key("write", "bytes_written_per_post")),
    Column("data+index MB", _summary_size),
)
# Text columns; the others are numbers, right-aligned.
SUMMARY_LEFT = frozenset({"strategy", "plan"})


def summary_table(results: dict[str, Any]) -> Table:
    t = Table(title="Timeline strategies: summary (times are this backend's; counts transfer)")
    for c in SUMMARY_COLUMNS:
        t.add_column(c.header, justify="left" if c.header in SUMMARY_LEFT else "right")
    rows = _strategy_rows(results)
    naive = results["baselines"].get("naive_on_read")
    if naive:
        rows.append(
            {"name": "naive_on_read", "read": naive["read"], "plan_text": "one find per friend"}
        )
    floor = results["baselines"].get("floor")
    if floor:
        rows.append({"name": "floor", "plan_text": str(floor["read"]["plan"]), **floor})
    for row in rows:
        t.add_row(*(fmt(c.value(row)) for c in SUMMARY_COLUMNS))
    return t
