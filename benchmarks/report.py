"""report.md (tables and conclusions computed from the numbers) and the terminal summary."""

from __future__ import annotations

from collections.abc import Sequence
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


def _read_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    entries = [(n, s["read"], s.get("vs_floor")) for n, s in results["strategies"].items()]
    naive = results["baselines"].get("naive_on_read")
    if naive:
        entries.append(("naive_on_read (baseline)", naive["read"], naive.get("vs_floor")))
    floor = results["baselines"].get("floor")
    if floor:
        entries.append(("floor (baseline)", floor["read"], {"read_p50": 1.0}))
    for name, r, vs in entries:
        rows.append(
            [
                name,
                r["p50_ms"],
                r["p95_ms"],
                r["p99_ms"],
                r["keys_examined_per_read"],
                r["docs_examined_per_read"],
                r["round_trips_per_read"],
                f"`{r['plan']}`",
                r["blocking_sort"],
                (vs or {}).get("read_p50"),
            ]
        )
    return rows


def _sections(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    strategies = results["strategies"]
    out = []
    out.append(
        "## Reads: first timeline page (limit {})\n\n".format(meta["page_limit"])
        + "Latency of `strategy.read()` (the database part of `GET /timeline`); keys and documents "
        "examined from `explain` (executionStats) of the page query for a sample of the readers; "
        "round trips counted by PyMongo command monitoring (the friend list included where a "
        "strategy needs it).\n\n"
        + table(
            [
                "strategy",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "keys examined",
                "docs examined",
                "round trips",
                "winning plan",
                "blocking SORT",
                "p50 × floor",
            ],
            _read_rows(results),
        )
    )
    out.append(
        "### Refresh (`after` the newest item seen)\n\n"
        + table(
            ["strategy", "p50 ms", "p95 ms", "round trips"],
            [
                [n, r["p50_ms"], r["p95_ms"], r["round_trips_per_read"]]
                for n, s in strategies.items()
                for r in [s["read"]["refresh"]]
            ],
        )
    )
    out.append(
        "## Writes: a post\n\n"
        "API latency is `app.statuses.post` (status, the strategy's synchronous part and the "
        "outbox event, in one transaction); *visible* adds draining the fanout worker, after "
        "which every friend's timeline shows it (fanout_on_read's posts are visible at commit: "
        "its drain is outbox bookkeeping only). Documents and BSON bytes written count every "
        "write command of both parts (outbox and lease bookkeeping included: see the "
        "breakdown).\n\n"
        + table(
            [
                "strategy",
                "p50 ms",
                "p99 ms",
                "visible p50 ms",
                "visible p99 ms",
                "docs written",
                "bytes written",
                "docs by collection",
            ],
            [
                [
                    n,
                    w["p50_ms"],
                    w["p99_ms"],
                    w["visible_p50_ms"],
                    w["visible_p99_ms"],
                    w["docs_written_per_post"],
                    w["bytes_written_per_post"],
                    ", ".join(f"{k} {fmt(v)}" for k, v in w["docs_by_collection"].items()),
                ]
                for n, s in strategies.items()
                for w in [s["write"]]
            ],
        )
    )
    out.append(
        "## Friendship changes and deletes: documents touched per operation\n\n"
        "Whole operation (request + accept, or unfriend, or delete) plus the worker's "
        "reconciliation.\n\n"
        + table(
            ["strategy", "friend", "unfriend", "delete", "friend visible p50 ms"],
            [
                [
                    n,
                    r["docs_per_friend"],
                    r["docs_per_unfriend"],
                    r["docs_per_delete"],
                    r["operations"].get("friend", {}).get("visible_p50_ms"),
                ]
                for n, s in strategies.items()
                for r in [s["reconcile"]]
            ],
        )
    )
    out.append(
        "## Storage (after loading and deriving, before the mix)\n\n"
        + table(
            ["strategy", "data MB", "index MB", "derived collection", "its documents"],
            [
                [
                    n,
                    mb(st["data_bytes"]),
                    mb(st["index_bytes"]),
                    *_derived(n, st["collections"]),
                ]
                for n, s in strategies.items()
                for st in [s["storage"]]
            ],
        )
    )
    out.append(_scaling_section(results))
    return out


def _derived(name: str, collections: dict[str, Any]) -> list[Any]:
    coll = "timeline_entries" if name == "receiver_copies" else "statuses"
    return [coll, collections.get(coll, {}).get("count")]


def _scaling_section(results: dict[str, Any]) -> str:
    rows = sorted(results["scaling"], key=lambda r: (r["friends"], r["strategy"]))
    return (
        "## Scaling sweep: a reader/author with F friends\n\n"
        "Reads: one page of the probe user's timeline; writes: a post by the probe user, "
        "until visible to all F friends. *× floor* compares the time until visible with raw "
        "`insert_many` of F+1 ready-made entries.\n\n"
        + table(
            [
                "friends",
                "strategy",
                "keys examined",
                "docs examined",
                "round trips",
                "read p50 ms",
                "plan",
                "docs written",
                "post p50 ms",
                "visible p50 ms",
                "visible × floor",
            ],
            [
                [
                    r["friends"],
                    r["strategy"],
                    r["read_keys_examined"],
                    r["read_docs_examined"],
                    r["read_round_trips"],
                    r["read_p50_ms"],
                    f"`{r['read_plan']}`",
                    r["write_docs"],
                    r["write_p50_ms"],
                    r["write_visible_p50_ms"],
                    r.get("write_vs_floor"),
                ]
                for r in rows
            ],
        )
    )


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
    body = _sections(results)
    if "shards" in results:
        from benchmarks.shards_report import section

        body.append(section(results))
    pics = ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n\n" + "\n".join(pics) + "\n"


def summary_table(results: dict[str, Any]) -> Table:
    t = Table(title="Timeline strategies: summary (times are this backend's; counts transfer)")
    for col in (
        "strategy",
        "read p50 ms",
        "read p99 ms",
        "keys/read",
        "round trips",
        "plan",
        "post p50 ms",
        "visible p99 ms",
        "docs/post",
        "bytes/post",
        "data+index MB",
    ):
        t.add_column(col, justify="left" if col in ("strategy", "plan") else "right")
    for name, s in results["strategies"].items():
        r, w, st = s["read"], s["write"], s["storage"]
        t.add_row(
            name,
            fmt(r["p50_ms"]),
            fmt(r["p99_ms"]),
            fmt(r["keys_examined_per_read"]),
            fmt(r["round_trips_per_read"]),
            str(r["plan"]) + (" (blocking SORT)" if r["blocking_sort"] else ""),
            fmt(w["p50_ms"]),
            fmt(w["visible_p99_ms"]),
            fmt(w["docs_written_per_post"]),
            fmt(w["bytes_written_per_post"]),
            mb(st["data_bytes"] + st["index_bytes"]),
        )
    naive = results["baselines"].get("naive_on_read")
    if naive:
        r = naive["read"]
        t.add_row(
            "naive_on_read",
            fmt(r["p50_ms"]),
            fmt(r["p99_ms"]),
            fmt(r["keys_examined_per_read"]),
            fmt(r["round_trips_per_read"]),
            "one find per friend",
            *["–"] * 5,
        )
    floor = results["baselines"].get("floor")
    if floor:
        r = floor["read"]
        t.add_row(
            "floor",
            fmt(r["p50_ms"]),
            fmt(r["p99_ms"]),
            fmt(r["keys_examined_per_read"]),
            fmt(r["round_trips_per_read"]),
            str(r["plan"]),
            "–",
            "–",
            "–",
            "–",
            f"insert_many {fmt(floor['insert_many_entries_per_s'])}/s",
        )
    return t
