"""The write-path goals of issue 23, checked against one `benchmarks run`'s own numbers (never
written by hand): each goal's measured ratio, its target and whether it holds, for report.md's
"Goals" section and results.json's `goals`.

Every ratio compares two figures of the same run (the same data, the same machine moments):
- a 5,000-friend post's time until visible to every friend over the raw `insert_many` floor of
  as many entries (`write_vs_floor` of the sweep's largest level), per materialized strategy;
- inbox_buckets against receiver_copies: that post's visible time, the mixed posts' visible p50
  and the bytes written per post (everything counted: entries, events, leases, checkpoints);
- inbox_buckets' page: round trips and index keys examined per first page at every sweep level
  (a page from its head bucket, at most one more, and a bounded number of unfolded entries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.strategies.inbox_buckets.loose import LOOSE_READ

# The friend count of the goals' big post: the sweep's largest level when it is at least this.
BIG_POST_FRIENDS = 5000
# The targets, as the issue states them.
MATERIALIZED_VS_FLOOR = 1.3
INBOX_BIG_VS_COPIES = 1.2
INBOX_MIXED_VS_COPIES = 1.5
INBOX_BYTES_VS_COPIES = 1.5
INBOX_PAGE_ROUND_TRIPS = 1.0
# Keys a first page of inbox_buckets may examine: its head and the bucket below, and the loose
# entries one query returns at most (LOOSE_READ and one more, to know whether there are more);
# a page that grows with the timeline or the friend count fails it.
INBOX_PAGE_KEYS = 2 + LOOSE_READ + 1
# The strategies whose big post is fanned out. hybrid pulls a 5,000-friend author's statuses at
# read time (HYBRID_THRESHOLD), so its big post writes no entries; its small authors' fan-out is
# the same machinery as receiver_copies', which `benchmarks fanout` times on its own.
MATERIALIZED = ("receiver_copies", "inbox_buckets")


@dataclass(frozen=True)
class Goal:
    goal: str
    measured: float | None
    target: float
    met: bool | None  # None: not measured in this run


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _at_most(goal: str, measured: float | None, target: float) -> Goal:
    return Goal(goal, measured, target, None if measured is None else measured <= target)


def _big_level(results: dict[str, Any]) -> int | None:
    sweep = results["meta"].get("sweep") or []
    top = max(sweep, default=0)
    return top if top >= BIG_POST_FRIENDS else None


def _scaling(results: dict[str, Any], strategy: str, friends: int) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in results.get("scaling", [])
            if r["strategy"] == strategy and r["friends"] == friends
        ),
        None,
    )


def _big_post(results: dict[str, Any], big: int) -> list[Goal]:
    out = []
    for name in MATERIALIZED:
        row = _scaling(results, name, big)
        if row is not None:
            out.append(
                _at_most(
                    f"{name}: a {big:,}-friend post visible, over the insert_many floor",
                    _ratio(row["write_visible_p50_ms"], row["write_floor_ms"]),
                    MATERIALIZED_VS_FLOOR,
                )
            )
    i, c = _scaling(results, "inbox_buckets", big), _scaling(results, "receiver_copies", big)
    if i is not None and c is not None:
        out.append(
            _at_most(
                f"inbox_buckets: a {big:,}-friend post visible, over receiver_copies'",
                _ratio(i["write_visible_p50_ms"], c["write_visible_p50_ms"]),
                INBOX_BIG_VS_COPIES,
            )
        )
    return out


def _mixed_posts(inbox: dict[str, Any], copies: dict[str, Any]) -> list[Goal]:
    iw, cw = inbox["write"], copies["write"]
    return [
        _at_most(
            "inbox_buckets: mixed posts visible p50, over receiver_copies'",
            _ratio(iw["visible_p50_ms"], cw["visible_p50_ms"]),
            INBOX_MIXED_VS_COPIES,
        ),
        _at_most(
            "inbox_buckets: bytes written per post (its fold included), over receiver_copies'",
            _ratio(iw["bytes_written_per_post"], cw["bytes_written_per_post"]),
            INBOX_BYTES_VS_COPIES,
        ),
    ]


def _pages(levels: list[dict[str, Any]]) -> list[Goal]:
    return [
        _at_most(
            "inbox_buckets: round trips per first page, the most at any sweep level",
            max(r["read_round_trips"] for r in levels),
            INBOX_PAGE_ROUND_TRIPS,
        ),
        _at_most(
            "inbox_buckets: index keys examined per first page, the most at any sweep level",
            max(r["read_keys_examined"] for r in levels),
            INBOX_PAGE_KEYS,
        ),
    ]


def goals(results: dict[str, Any]) -> list[Goal]:
    strategies = results["strategies"]
    out: list[Goal] = []
    big = _big_level(results)
    if big is not None:
        out += _big_post(results, big)
    if "inbox_buckets" in strategies and "receiver_copies" in strategies:
        out += _mixed_posts(strategies["inbox_buckets"], strategies["receiver_copies"])
    levels = [r for r in results.get("scaling", []) if r["strategy"] == "inbox_buckets"]
    if levels:
        out += _pages(levels)
    return out


def goals_json(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [asdict(g) for g in goals(results)]


def section(results: dict[str, Any]) -> str:
    """report.md's "Goals" section."""
    rows = goals(results)
    if not rows:
        return ""
    lines = [
        "## Goals of the write path (issue 23), from this run",
        "",
        "Each ratio compares two figures of this run; docs/benchmarks.md says where the time goes.",
        "",
        "| goal | measured | target | met |",
        "|---|---|---|---|",
    ]
    for g in rows:
        measured = "–" if g.measured is None else f"{g.measured:g}"
        met = "not measured" if g.met is None else ("yes" if g.met else "**no**")
        lines.append(f"| {g.goal} | {measured} | ≤ {g.target:g} | {met} |")
    return "\n".join(lines)
