"""The typed rows and summaries (benchmarks.results) spell results.json, and the report's table
specs read what they spell: a summary built from samples renders in every table."""

from __future__ import annotations

import json
from collections import Counter

from benchmarks import report
from benchmarks.explain import Explained
from benchmarks.measure import Samples, summarize_strategy
from benchmarks.monitor import Window
from benchmarks.results import CollectionStorage, ScalingRow, Storage, WriteSample


def sample(seconds: float, docs: int) -> WriteSample:
    window = Window(docs_written=docs, bytes_written=100 * docs, docs_by_collection=Counter())
    window.docs_by_collection.update({"statuses": 1, "events": docs - 1})
    return WriteSample(api_s=seconds, visible_s=2 * seconds, window=window)


def summary() -> dict[str, object]:
    samples = Samples(
        read_s=[0.001, 0.003, 0.002],
        read_round_trips=[2, 2, 2],
        read_queries=[1, 1, 1],
        refresh_s=[0.001],
        refresh_round_trips=[2],
        explained=[Explained("IXSCAN>FETCH", False, 20, 20, 20)],
        writes={"post": [sample(0.002, 3), sample(0.004, 5)], "friend": [sample(0.01, 9)]},
    )
    storage = Storage(10, 20, {"statuses": CollectionStorage(3, 10, 20)})
    return summarize_strategy(samples, storage).as_json()


def test_a_strategy_summary_has_the_documented_shape() -> None:
    s = summary()
    assert list(s) == ["read", "write", "reconcile", "storage"]
    read, write, reconcile = s["read"], s["write"], s["reconcile"]
    assert isinstance(read, dict) and isinstance(write, dict) and isinstance(reconcile, dict)
    assert read["p50_ms"] == 2.0 and read["reads"] == 3 and read["plans"] == {"IXSCAN>FETCH": 1}
    assert list(read)[-2:] == ["queries_per_read", "refresh"]
    assert read["refresh"] == {"p50_ms": 1.0, "p95_ms": 1.0, "round_trips_per_read": 2.0}
    assert write["posts"] == 2 and write["docs_written_per_post"] == 4.0
    assert write["docs_by_collection"] == {"events": 3.0, "statuses": 1.0}
    assert reconcile["docs_per_friend"] == 9.0 and reconcile["docs_per_delete"] is None
    assert list(reconcile["operations"]) == ["friend"]
    json.dumps(s)  # plain JSON all the way down


def test_the_naive_row_leaves_out_what_it_does_not_measure() -> None:
    reads = [(0.004, Window(round_trips=12)), (0.002, Window(round_trips=10))]
    ex = Explained("n×(IXSCAN)", True, 8, 8, 20)
    row = ScalingRow.of("naive_on_read", 10, ex, reads, "statuses").as_json()
    assert "read_keys_matching" not in row
    assert row["read_round_trips"] == 11.0 and row["read_p50_ms"] == 2.0
    assert row["write_docs"] is row["write_p50_ms"] is row["write_visible_p50_ms"] is None
    posts = [sample(0.002, 3), sample(0.004, 5)]
    row = ScalingRow.of("x", 10, ex, reads, "statuses", matching=5, posts=posts).as_json()
    assert row["read_keys_matching"] == 5 and row["write_docs"] == 4.0
    assert row["write_visible_p50_ms"] == 4.0


def test_every_report_table_reads_the_typed_summary() -> None:
    rows = [{"name": "fanout_on_read", **summary()}]
    for columns in (
        report.READ_COLUMNS,
        report.REFRESH_COLUMNS,
        report.WRITE_COLUMNS,
        report.RECONCILE_COLUMNS,
        report.STORAGE_COLUMNS,
    ):
        text = report.render(columns, rows)
        header, _, cells = text.splitlines()
        assert header.count("|") == cells.count("|") == len(columns) + 1
    assert "`IXSCAN>FETCH`" in report.render(report.READ_COLUMNS, rows)
    assert "events 3.00, statuses 1.00" in report.render(report.WRITE_COLUMNS, rows)


def test_a_sort_bounded_by_the_page_is_not_called_growing() -> None:
    """A page query with a SORT over one bucket at every friend count (inbox_buckets) is said to
    sort a bounded set; one whose keys grow past the page with the friend count
    (receiver_copies) is said to grow: the conclusions read the run they are given."""
    from benchmarks import conclusions

    def read(p50_ms: float) -> dict[str, object]:
        return {"p50_ms": p50_ms, "blocking_sort": True}

    def row(strategy: str, friends: int, keys: int) -> dict[str, object]:
        return {"strategy": strategy, "friends": friends, "read_keys_examined": keys}

    results = {
        "meta": {"page_limit": 20, "backend": "the embedded server"},
        "baselines": {},
        "strategies": {
            "receiver_copies": {"read": read(0.8)},
            "inbox_buckets": {"read": read(0.5)},
        },
        "scaling": [
            row("receiver_copies", 10, 12),
            row("receiver_copies", 1000, 800),
            row("inbox_buckets", 10, 1),
            row("inbox_buckets", 1000, 2),
        ],
    }
    lines = conclusions._read_lines(results)
    growing = next(line for line in lines if "keys examined grow" in line)
    bounded = next(line for line in lines if "bounded by the page" in line)
    assert "receiver_copies" in growing and "inbox_buckets" not in growing
    assert "inbox_buckets" in bounded and "receiver_copies" not in bounded
    assert "at most 2 index keys" in bounded
    # Past the page at one level is growth, whatever the others.
    results["scaling"] = [*results["scaling"], row("inbox_buckets", 5000, 21)]
    growing = next(line for line in conclusions._read_lines(results) if "grow" in line)
    assert "inbox_buckets" in growing
