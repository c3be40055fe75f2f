"""benchmarks.shards: routing commands as a mongos would under the shard plan, and
`python -m benchmarks run --shards` end to end (a small run against the session's server)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from benchmarks.shards import (
    HASH_MIN,
    HASH_SPACE,
    hash64,
    key_values,
    route,
    route_operation,
    shard_of,
)
from tests.test_benchmarks import ARGS, RUN_TIMEOUT_S

SHARD_COUNTS = (1, 4)
# Not on xdist's workers (`make test` runs it in its own pytest process after them): the
# sharded benchmark run of the module-scoped fixture (22 s) then runs once, never once on each
# worker.
pytestmark = pytest.mark.serial


def test_hash_is_mongodb_shaped() -> None:
    oid = ObjectId()
    assert hash64(oid) == hash64(ObjectId(oid.binary))  # a function of the value only
    assert HASH_MIN <= hash64(oid) < HASH_MIN + HASH_SPACE
    assert hash64(1) == hash64(1.0)  # numbers are squashed to 64-bit integers first
    assert hash64(1) != hash64("1") != hash64(True)  # the canonical type is hashed too
    assert hash64(ObjectId(b"\x00" * 12)) != hash64(ObjectId(b"\x00" * 11 + b"\x01"))


def test_hashed_chunks_spread_growing_ids_evenly() -> None:
    """ObjectIds made one after another (what a ranged key would pile on one shard) land on
    every shard about equally."""
    ids = [ObjectId() for _ in range(4000)]
    per_shard = Counter(shard_of(i, 4) for i in ids)
    assert set(per_shard) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in per_shard.values()), per_shard
    assert {shard_of(i, 1) for i in ids} == {0}


def test_key_values_of_filters() -> None:
    a, b = ObjectId(), ObjectId()
    assert key_values({"owner_id": a}, "owner_id") == [a]
    assert key_values({"owner_id": {"$eq": a}, "x": 1}, "owner_id") == [a]
    assert key_values({"owner_id": {"$in": [a, b]}}, "owner_id") == [a, b]
    assert key_values({"$and": [{"x": 1}, {"owner_id": a}]}, "owner_id") == [a]
    assert key_values({"$or": [{"owner_id": a}, {"owner_id": b}]}, "owner_id") == [a, b]
    assert key_values({"$or": [{"owner_id": a}, {"x": 1}]}, "owner_id") is None
    assert key_values({"owner_id": {"$gt": a}}, "owner_id") is None
    assert key_values({"owner_id": {"$nin": [a]}}, "owner_id") is None
    assert key_values({"status_id": a}, "owner_id") is None


def test_route_reads_by_the_plan() -> None:
    a, b = ObjectId(), ObjectId()
    page = route("find", {"find": "timeline_entries", "filter": {"owner_id": a}}, 16)
    assert page is not None and page.shards == frozenset({shard_of(a, 16)})
    audience = route("find", {"find": "statuses", "filter": {"audience": a}}, 16)
    assert audience is not None and audience.broadcast
    fan_in = route("find", {"find": "statuses", "filter": {"author_id": {"$in": [a, b]}}}, 16)
    assert fan_in is not None and fan_in.shards == frozenset({shard_of(a, 16), shard_of(b, 16)})
    pipeline = [{"$match": {"owner_id": a}}, {"$group": {}}]
    count = route("aggregate", {"aggregate": "timeline_entries", "pipeline": pipeline}, 16)
    assert count is not None and count.shards == frozenset({shard_of(a, 16)})
    user = route("find", {"find": "users", "filter": {"token_hash": "x"}}, 16)
    assert user is not None and user.shards == frozenset({0})  # unsharded: the primary shard
    assert route("getMore", {"getMore": 1, "collection": "statuses"}, 16) is None
    assert route("find", {"find": "not_in_the_plan", "filter": {}}, 16) is None


def test_route_writes_where_the_documents_go() -> None:
    owners = [ObjectId() for _ in range(64)]
    docs = [{"owner_id": o, "status_id": ObjectId()} for o in owners]
    fan_out = route("insert", {"insert": "timeline_entries", "documents": docs}, 8, written=64)
    assert fan_out is not None
    expected = Counter(shard_of(o, 8) for o in owners)
    assert fan_out.shards == frozenset(expected)
    assert {k: round(v) for k, v in fan_out.writes.items()} == dict(expected)
    unfriend = route(
        "delete",
        {"delete": "timeline_entries", "deletes": [{"q": {"owner_id": owners[0]}, "limit": 0}]},
        8,
        written=3,
    )
    assert unfriend is not None and unfriend.writes == {shard_of(owners[0], 8): 3.0}
    by_id = route(
        "update", {"update": "statuses", "updates": [{"q": {"_id": ObjectId()}, "u": {}}]}, 8
    )
    assert by_id is not None and by_id.broadcast


def test_route_operation_unions_shards_and_shares_writes() -> None:
    a = ObjectId()
    owners = [ObjectId() for _ in range(100)]
    sent: list[tuple[str, dict[str, Any], int]] = [
        ("find", {"find": "friendships", "filter": {"user_id": a}}, 0),
        (
            "insert",
            {"insert": "timeline_entries", "documents": [{"owner_id": o} for o in owners]},
            100,
        ),
        ("find", {"find": "events", "filter": {"$or": [{"state": "pending"}]}}, 0),
    ]
    op = route_operation(sent, 4, only=lambda c: c != "events")
    assert op.broadcasts == 0 and op.commands == 2
    assert op.shards == {shard_of(a, 4)} | {shard_of(o, 4) for o in owners}
    assert op.docs_written == pytest.approx(100)
    # The share is the busiest shard's part of the writes, computed here from the same hash
    # (random owners: a range such as [0.25, 0.4) failed once in CI-like runs, at 0.43).
    per_shard = Counter(shard_of(o, 4) for o in owners)
    assert op.largest_write_share() == pytest.approx(max(per_shard.values()) / len(owners))
    everything = route_operation(sent, 4)
    assert everything.broadcasts == 1 and everything.shards == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def sharded_run(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench_shards")
    prefix = f"bench_sh{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "benchmarks", "run", *ARGS]
    cmd += [f"--mongodb-url={mongo_url}", f"--db-prefix={prefix}", f"--out={out}"]
    cmd += [f"--shards={','.join(map(str, SHARD_COUNTS))}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Shards touched per operation" in proc.stdout
    return out


def test_run_with_shards_reports_shards_touched(sharded_run: Path) -> None:
    results = json.loads((sharded_run / "results.json").read_text())
    sh = results["shards"]
    assert sh["counts"] == list(SHARD_COUNTS)
    assert set(sh["strategies"]) == set(results["strategies"])
    for name, per_count in sh["strategies"].items():
        one = per_count["1"]
        assert one["read"] == 1 and one["post"] == 1, name  # one shard holds everything
        for kind in ("read", "refresh", "post", "delete", "friend", "unfriend"):
            if kind in per_count["4"]:  # a small mix may have no unfriend
                assert 1 <= per_count["4"][kind] <= 4, (name, kind)
    four = {name: per_count["4"] for name, per_count in sh["strategies"].items()}
    # A receiver_copies page is owner-local; a recipients_embedded page asks every shard.
    assert four["receiver_copies"]["read"] == 1
    assert four["recipients_embedded"]["read"] == 4
    assert four["recipients_embedded"]["broadcasts_per_read"] >= 1
    assert four["fanout_on_read"]["read"] >= four["receiver_copies"]["read"]
    big = sh["big_author"]["receiver_copies"]
    assert big["friends"] == max(results["meta"]["sweep"])
    assert big["4"]["post_largest_shard_share"] < big["1"]["post_largest_shard_share"] == 1
    assert (sharded_run / "shards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Sharded: shards touched per operation" in (sharded_run / "report.md").read_text()
