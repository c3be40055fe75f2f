"""Conclusions for report.md, computed from the results (never written by hand): which strategy
wins for which workload, and where each one breaks down."""

from __future__ import annotations

from typing import Any

# A page read "breaks down" once it examines this many times the keys a page needs: past that,
# the read's cost grows with the graph instead of with the page.
KEYS_BREAKDOWN_FACTOR = 10
# A post "breaks down" once it takes this long to reach every friend's timeline (a user
# refreshing right after a friend posted would notice).
VISIBLE_BREAKDOWN_MS = 1000.0


def _best(values: dict[str, float | None], *, low: bool = True) -> tuple[str, float] | None:
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return None
    name = min(known, key=lambda k: known[k]) if low else max(known, key=lambda k: known[k])
    return name, known[name]


def _n(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _x(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "?"
    return f"{a / b:.1f}×"


def _read_lines(results: dict[str, Any]) -> list[str]:
    strategies = results["strategies"]
    lines = []
    p50 = {n: s["read"]["p50_ms"] for n, s in strategies.items()}
    best, worst = _best(p50), _best(p50, low=False)
    if best and worst and best[0] != worst[0]:
        lines.append(
            f"Reads (mixed readers): **{best[0]}** is fastest at p50 {best[1]:.2f} ms; "
            f"{worst[0]} is slowest at {worst[1]:.2f} ms ({_x(worst[1], best[1])})."
        )
    floor = results["baselines"].get("floor")
    if floor and best:
        lines.append(
            f"The floor (one indexed find of a ready page) reads in {floor['read_p50_ms']:.2f} ms: "
            f"the fastest strategy is {_x(best[1], floor['read_p50_ms'])} of it."
        )
    naive = results["baselines"].get("naive_on_read")
    if naive and "fanout_on_read" in strategies:
        n, f = naive["read"], strategies["fanout_on_read"]["read"]
        lines.append(
            f"naive_on_read (one query per friend) makes {n['round_trips_per_read']} round trips "
            f"per page where fanout_on_read makes {f['round_trips_per_read']}; p50 "
            f"{n['p50_ms']:.2f} ms against {f['p50_ms']:.2f} ms."
        )
    sorting = [n for n, s in strategies.items() if s["read"]["blocking_sort"]]
    # A SORT only costs what it sorts: a strategy whose page reads no more keys than a page
    # holds at every sweep level (inbox_buckets: one or two buckets) sorts a bounded set.
    most = _most_keys(results)
    growing = [n for n in sorting if most.get(n, 0) > results["meta"]["page_limit"]]
    bounded = [n for n in sorting if n not in growing]
    if growing:
        lines.append(
            f"On {results['meta']['backend']}, the page query of {', '.join(growing)} has a "
            "blocking in-memory SORT: keys examined grow with the timeline or friend list, not "
            "with the page (see the planner section of docs/benchmarks.md for mongod)."
        )
    if bounded:
        keys = max(most.get(n, 0) for n in bounded)
        lines.append(
            f"The page query of {', '.join(bounded)} examines at most {keys:,} index "
            f"key{'' if keys == 1 else 's'} at every friend count of the sweep: its SORT orders a "
            "set bounded by the page, not by the graph."
        )
    return lines


def _most_keys(results: dict[str, Any]) -> dict[str, int]:
    """Each strategy's most keys examined by a page read over the scaling sweep."""
    most: dict[str, int] = {}
    for row in results["scaling"]:
        name = row["strategy"]
        most[name] = max(most.get(name, 0), row["read_keys_examined"])
    return most


def _write_lines(results: dict[str, Any]) -> list[str]:
    strategies = results["strategies"]
    docs = {n: s["write"]["docs_written_per_post"] for n, s in strategies.items()}
    visible = {n: s["write"]["visible_p50_ms"] for n, s in strategies.items()}
    lines = []
    cheap, dear = _best(docs), _best(docs, low=False)
    if cheap and dear:
        lines.append(
            f"Posts (mixed authors): **{cheap[0]}** writes the fewest documents per post "
            f"({cheap[1]:.1f}), {dear[0]} the most ({dear[1]:.1f}); visible to every friend after "
            + ", ".join(f"{n} {v:.1f} ms" for n, v in visible.items() if v is not None)
            + " (p50)."
        )
    storage = {
        n: s["storage"]["data_bytes"] + s["storage"]["index_bytes"] for n, s in strategies.items()
    }
    small, big = _best(storage), _best(storage, low=False)
    if small and big and small[0] != big[0]:
        lines.append(
            f"Storage: {big[0]} needs {_x(big[1], small[1])} the bytes of {small[0]} "
            f"({big[1] / 1e6:.1f} MB against {small[1] / 1e6:.1f} MB, data and indexes)."
        )
    return lines


def _sweep_lines(results: dict[str, Any]) -> list[str]:
    rows = results["scaling"]
    if not rows:
        return []
    limit = results["meta"]["page_limit"]
    top = max(r["friends"] for r in rows)
    at_top = {r["strategy"]: r for r in rows if r["friends"] == top}
    lines = []
    keys = {n: r["read_keys_examined"] for n, r in at_top.items()}
    vis = {n: r["write_visible_p50_ms"] for n, r in at_top.items()}
    rk, wv = _best(keys), _best(vis)
    if rk and wv:
        lines.append(
            f"At {top:,} friends the cheapest read is **{rk[0]}** ({rk[1]:,} keys examined) and "
            f"the fastest post-to-visible is **{wv[0]}** ({wv[1]:.1f} ms): read-heavy users with "
            "many friends favour the former, frequent posters with many friends the latter."
        )
    for name in dict.fromkeys(r["strategy"] for r in rows):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r["friends"])
        bad_read = next(
            (r["friends"] for r in mine if r["read_keys_examined"] > KEYS_BREAKDOWN_FACTOR * limit),
            None,
        )
        bad_write = next(
            (r["friends"] for r in mine if (r["write_visible_p50_ms"] or 0) > VISIBLE_BREAKDOWN_MS),
            None,
        )
        parts = []
        if bad_read is not None:
            parts.append(
                f"reads examine more than {KEYS_BREAKDOWN_FACTOR}× the page from {bad_read:,} "
                "friends"
            )
        if bad_write is not None:
            parts.append(
                f"posts take over {VISIBLE_BREAKDOWN_MS:.0f} ms to reach every friend "
                f"from {bad_write:,} friends"
            )
        first, last = mine[0], mine[-1]
        growth = (
            f"keys examined {first['read_keys_examined']:,} → {last['read_keys_examined']:,}"
            f" and docs written per post {_n(first['write_docs'])} → {_n(last['write_docs'])}"
            f" from {first['friends']:,} to {last['friends']:,} friends"
        )
        verdict = "; ".join(parts) if parts else "no breakdown within the sweep on this backend"
        lines.append(f"{name}: {growth}; {verdict}.")
    return lines


def conclusions(results: dict[str, Any]) -> list[str]:
    return _read_lines(results) + _write_lines(results) + _sweep_lines(results)
