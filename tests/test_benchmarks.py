"""`python -m benchmarks run`: one small run against the session's server (in a subprocess, as a
user runs it), then its outputs' schema and the invariants that hold on any backend. No test
here asserts a time: times depend on the machine, counts do not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.config import QUICK_CHECK_MAX_FRIENDS
from benchmarks.explain import stage_chain, summarize
from benchmarks.loader import CHECK_SAMPLE
from benchmarks.redis_peer import redis_server_path
from benchmarks.run import parser

# Not on xdist's workers (`make test` runs it in its own pytest process after them): the
# benchmark run of the module-scoped fixture (26 s, nearly all of the module's time) then runs
# once, never once on each worker.
pytestmark = pytest.mark.serial

# Smaller than --quick: two sweep levels are enough to see growth with friend count, and 100
# friends keep the friend list in one batch (101 documents), so round trips are exact.
SWEEP = (10, 100)
ARGS = [
    "--quick",
    "--users=150",
    "--avg-friends=3",
    "--statuses=300",
    "--reads=24",
    f"--sweep={','.join(map(str, SWEEP))}",
    "--repeats=2",
]
# The run is a few seconds of work; this only stops a hung one.
RUN_TIMEOUT_S = 300
PAGE_LIMIT = 20

READ_KEYS = {
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "keys_examined_per_read",
    "docs_examined_per_read",
    "round_trips_per_read",
    "plan",
}
SCALING_KEYS = {
    "strategy",
    "friends",
    "read_keys_examined",
    "read_p50_ms",
    "write_docs",
    "write_p50_ms",
}


@pytest.fixture(scope="module")
def run_dir(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    prefix = f"bench_t{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "benchmarks", "run", *ARGS]
    cmd += [f"--mongodb-url={mongo_url}", f"--db-prefix={prefix}", f"--out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "read p50 ms" in proc.stdout  # the summary table
    return out


@pytest.fixture(scope="module")
def results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    return data


def rows(results: dict[str, Any], strategy: str) -> dict[int, dict[str, Any]]:
    return {r["friends"]: r for r in results["scaling"] if r["strategy"] == strategy}


def test_outputs_exist(run_dir: Path) -> None:
    for png in ("latency.png", "scaling.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    report = (run_dir / "report.md").read_text()
    assert "## Conclusions" in report and "## Scaling sweep" in report
    assert "![latency.png](latency.png)" in report
    # Without --shards, no shard simulation (the default output is unchanged).
    assert not (run_dir / "shards.png").exists() and "Sharded" not in report


def test_results_schema(results: dict[str, Any]) -> None:
    meta = results["meta"]
    assert {"backend", "users", "statuses", "reads", "seed", "started_at"} <= set(meta)
    assert meta["statuses"] == 300 and meta["reads"] == 24 and meta["seed"] == 1
    peer = {"redis_sorted_set"} if redis_server_path() is not None else set()
    assert set(results["strategies"]) == {
        "fanout_on_read",
        "recipients_embedded",
        "receiver_copies",
        "inbox_buckets",
        *peer,
        "hybrid",
    }
    if not peer:
        assert results["skipped"] == {"redis_sorted_set": "no redis-server on PATH"}
    for name, s in results["strategies"].items():
        assert set(s["read"]) >= READ_KEYS, name
        assert {
            "p50_ms",
            "p99_ms",
            "visible_p99_ms",
            "docs_written_per_post",
            "bytes_written_per_post",
        } <= set(s["write"]), name
        assert {"docs_per_friend", "docs_per_unfriend"} <= set(s["reconcile"]), name
        assert {"data_bytes", "index_bytes"} <= set(s["storage"]), name
        assert s["storage"]["data_bytes"] > 0 and s["storage"]["index_bytes"] > 0
        assert s["write"]["docs_written_per_post"] >= 1
        assert s["write"]["bytes_written_per_post"] > 0
    assert set(results["baselines"]["naive_on_read"]["read"]) >= READ_KEYS
    assert {"read_p50_ms", "insert_many_entries_per_s"} <= set(results["baselines"]["floor"])
    names = {r["strategy"] for r in results["scaling"]}
    assert names == {*results["strategies"], "naive_on_read"}
    for row in results["scaling"]:
        assert set(row) >= SCALING_KEYS
    assert {r["friends"] for r in results["scaling"]} == set(SWEEP)


def test_every_strategy_matched_the_ground_truth(results: dict[str, Any]) -> None:
    """Every strategy, fanout_on_read included, was compared for every probe user within
    --quick's check limit and CHECK_SAMPLE ordinary users, and none differed."""
    compared = len([f for f in SWEEP if f <= QUICK_CHECK_MAX_FRIENDS]) + CHECK_SAMPLE
    assert set(results["checks"]) == set(results["strategies"])
    for name, check in results["checks"].items():
        assert check["timelines_differing_from_truth"] == [], name
        assert check["users_compared"] == compared, name


def test_receiver_copies_reads_a_page_in_one_query(results: dict[str, Any]) -> None:
    assert results["strategies"]["receiver_copies"]["read"]["round_trips_per_read"] == 1
    for friends, row in rows(results, "receiver_copies").items():
        assert row["read_round_trips"] == 1, friends


def test_fanout_on_read_one_statuses_query_naive_one_per_friend(results: dict[str, Any]) -> None:
    assert results["strategies"]["fanout_on_read"]["read"]["queries_per_read"] == 1
    fanout, naive = rows(results, "fanout_on_read"), rows(results, "naive_on_read")
    for friends in SWEEP:
        # The friend list, then one statuses query; naive: the list, then one per author.
        assert fanout[friends]["read_queries"] == 1
        assert fanout[friends]["read_round_trips"] == 2
        assert naive[friends]["read_queries"] == friends + 1
        assert naive[friends]["read_round_trips"] == friends + 2


def test_docs_written_per_post_grow_with_friends_only_for_copies(results: dict[str, Any]) -> None:
    small, big = SWEEP
    copies = rows(results, "receiver_copies")
    assert copies[big]["write_docs"] - copies[small]["write_docs"] >= big - small
    for name in ("fanout_on_read", "recipients_embedded"):
        mine = rows(results, name)
        assert mine[big]["write_docs"] == mine[small]["write_docs"], name


def test_each_level_is_compared_with_its_own_floor(results: dict[str, Any]) -> None:
    """A level's posts are paired with raw insert_many of as many entries, timed right after
    each in the strategy's database: each row has its own floor, and its ratio is over that one
    (not over the run's single rate, timed first on an empty server)."""
    rate = results["baselines"]["floor"]["insert_many_entries_per_s"]
    own = set()
    for name in ("receiver_copies", "inbox_buckets", "fanout_on_read"):
        for friends, row in rows(results, name).items():
            assert row["write_floor_ms"] > 0, (name, friends)
            ratio = row["write_visible_p50_ms"] / row["write_floor_ms"]
            assert abs(row["write_vs_floor"] - ratio) < 0.01, (name, friends)
            own.add(row["write_floor_ms"] != round((friends + 1) / rate * 1000, 3))
    assert True in own  # measured, not the run's rate restated


def key_bound(plan: str, matching: float | None = None) -> float | None:
    """Keys a page may examine. When the index gives the order: limit + 1 for one index range,
    plus one per merged scan for mongod's SORT_MERGE of `$in` values. With a blocking SORT (the
    embedded server's plans): every key the filter matches, once, and no other (`matching`;
    None when unknown). None when no index is used."""
    stages = re.split(r"[>()|]", plan)
    if "IXSCAN" not in stages:
        return None
    if "SORT" in stages:
        return matching
    merged = re.search(r"(\d+)×\(IXSCAN\)>SORT_MERGE", plan)
    return PAGE_LIMIT + 1 + (int(merged.group(1)) if merged else 0)


def test_keys_examined_bounded_on_any_server(results: dict[str, Any]) -> None:
    """Every strategy at every sweep level reads its page through an index, examining about
    `limit` keys where the index gives the order (on mongod: receiver_copies,
    recipients_embedded, and fanout_on_read up to 200 authors) and otherwise no key the filter
    does not select; the mix's reads and the floor's where the index gives the order."""
    reads = [(n, s["read"]["plan"], s["read"]) for n, s in results["strategies"].items()]
    reads.append(("floor", "IXSCAN>FETCH", results["baselines"]["floor"]["read"]))
    uniform = set()
    for name, plan, read in reads:
        if read["plans"] != {plan: read["explained"]}:
            continue  # per-read plans differ (mongod's choice): their means do not compare
        uniform.add(name)
        # A blocking SORT (every plan of the embedded server) examines at best each key the
        # filter selects once: the counted matches are its bound.
        bound = key_bound(plan, read.get("keys_matching_per_read"))
        assert bound is not None, (name, plan, read)  # through an index, with a bound
        assert read["keys_examined_per_read"] <= bound, name
    assert {*results["strategies"], "floor"} - uniform <= {"fanout_on_read", "hybrid"}
    checked = set()
    for row in results["scaling"]:
        if row["strategy"] == "naive_on_read":
            continue
        assert row["read_keys_matching"] > 0, row  # the probe user sees statuses
        bound = key_bound(row["read_plan"], row["read_keys_matching"])
        assert bound is not None, row  # read through an index
        assert row["read_keys_examined"] <= bound, row
        checked.add((row["strategy"], row["friends"]))
    assert checked == {(name, f) for name in results["strategies"] for f in SWEEP}


def test_key_bound_of_plans() -> None:
    assert key_bound("IXSCAN>FETCH>LIMIT") == PAGE_LIMIT + 1
    assert key_bound("IXSCAN>FETCH>SORT>PROJECTION_SIMPLE") is None
    assert key_bound("IXSCAN>FETCH>SORT>PROJECTION_SIMPLE", 186) == 186
    assert key_bound("COLLSCAN>SORT", 186) is None
    assert key_bound("11×(IXSCAN)>SORT_MERGE>FETCH>LIMIT") == PAGE_LIMIT + 12


def test_plan_chains_of_mongod_shapes() -> None:
    """mongod merges per-value index scans for `$in` + sort (not blocking) and falls back to a
    blocking SORT; the chain shows both, leaf first."""
    ixscan = {"stage": "IXSCAN", "keyPattern": {"author_id": 1, "_id": -1}}
    merged = {
        "stage": "LIMIT",
        "inputStage": {
            "stage": "FETCH",
            "inputStage": {"stage": "SORT_MERGE", "inputStages": [ixscan, ixscan, ixscan]},
        },
    }
    assert stage_chain(merged) == "3×(IXSCAN)>SORT_MERGE>FETCH>LIMIT"
    explain = {
        "queryPlanner": {"winningPlan": merged},
        "executionStats": {"totalKeysExamined": 23, "totalDocsExamined": 20, "nReturned": 20},
    }
    assert summarize(explain).blocking_sort is False
    blocking = {"stage": "SORT", "inputStage": {"stage": "FETCH", "inputStage": ixscan}}
    sbe = {"queryPlanner": {"winningPlan": {"queryPlan": blocking}}, "executionStats": {}}
    assert summarize(sbe).plan == "IXSCAN>FETCH>SORT"
    assert summarize(sbe).blocking_sort is True


def test_help_explains_every_option() -> None:
    text = parser().format_help()
    for option in (
        "--quick",
        "--strategies",
        "--users",
        "--avg-friends",
        "--statuses",
        "--reads",
        "--seed",
        "--mongodb-url",
        "--out",
        "--sweep",
    ):
        assert option in text, option


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["--out", "x", "--strategies", "nope"])
    assert exc.value.code == 2
    assert "unknown strategy nope" in capsys.readouterr().err
