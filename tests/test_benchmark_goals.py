"""benchmarks/goals.py: issue 23's goals computed from one run's own figures."""

from __future__ import annotations

from typing import Any

from benchmarks.goals import goals, section
from benchmarks.monitor import Window
from benchmarks.results import OpSummary, WriteSummary


def results(inbox_visible_ms: float, inbox_mixed_ms: float, keys: int) -> dict[str, Any]:
    def row(name: str, visible: float, floor: float, k: int) -> dict[str, Any]:
        return {
            "strategy": name,
            "friends": 5000,
            "write_visible_p50_ms": visible,
            "write_floor_ms": floor,
            "read_round_trips": 1.0,
            "read_keys_examined": k,
        }

    def strategy(mixed: float, nbytes: float) -> dict[str, Any]:
        return {"write": {"visible_p50_ms": mixed, "bytes_written_per_post": nbytes}}

    return {
        "meta": {"sweep": [10, 5000]},
        "strategies": {
            "receiver_copies": strategy(10.0, 1000.0),
            "inbox_buckets": strategy(inbox_mixed_ms, 1400.0),
        },
        "scaling": [
            row("receiver_copies", 1100.0, 1000.0, 20),
            row("inbox_buckets", inbox_visible_ms, 1000.0, keys),
        ],
    }


def test_goals_hold_and_fail_on_the_runs_own_ratios() -> None:
    met = {g.goal: g for g in goals(results(1200.0, 14.0, 30))}
    assert all(g.met for g in met.values()), met
    big = met["inbox_buckets: a 5,000-friend post visible, over receiver_copies'"]
    assert big.measured == round(1200 / 1100, 3)
    missed = {g.goal: g for g in goals(results(4700.0, 118.0, 900))}
    failing = sorted(name for name, g in missed.items() if not g.met)
    assert failing == [
        "inbox_buckets: a 5,000-friend post visible, over receiver_copies'",
        "inbox_buckets: a 5,000-friend post visible, over the insert_many floor",
        "inbox_buckets: index keys examined per first page, the most at any sweep level",
        "inbox_buckets: mixed posts visible p50, over receiver_copies'",
    ]
    assert "**no**" in section(results(4700.0, 118.0, 900))


def test_no_goal_of_the_big_post_without_a_5000_friend_level() -> None:
    small = results(1200.0, 14.0, 30)
    small["meta"]["sweep"] = [10, 100]
    assert not any("5,000" in g.goal for g in goals(small))


def test_a_posts_deferred_fold_is_counted_in_its_bytes_and_documents() -> None:
    post = OpSummary(
        count=4,
        p50_ms=1.0,
        p99_ms=2.0,
        visible_p50_ms=3.0,
        visible_p99_ms=4.0,
        docs=10.0,
        bytes=1000.0,
        docs_by_collection={"inbox_buckets": 8.0, "events": 2.0},
    )
    fold = Window(docs_written=40, bytes_written=2000)
    fold.docs_by_collection.update({"inbox_buckets": 40})
    with_fold = WriteSummary.of(post, fold=fold)
    assert (with_fold.docs_written_per_post, with_fold.bytes_written_per_post) == (20.0, 1500.0)
    assert (with_fold.fold_docs_per_post, with_fold.fold_bytes_per_post) == (10.0, 500.0)
    assert with_fold.docs_by_collection == {"inbox_buckets": 18.0, "events": 2.0}
    assert with_fold.fold_rewrite_bytes_per_post is None  # not measured for this window
    fold.bytes_rewritten = 20_000
    measured = WriteSummary.of(post, fold=fold)
    assert measured.fold_rewrite_bytes_per_post == 5000.0
    assert measured.bytes_written_per_post == 1500.0  # what the client sent, only
    alone = WriteSummary.of(post)
    assert (alone.bytes_written_per_post, alone.fold_bytes_per_post) == (1000.0, None)
