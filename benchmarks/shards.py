"""Routing the commands the service sends as a mongos would, under the shard plan
(app.storage.sharding.plan) with N shards: which shards each command touches, and where the
documents
it writes land. No cluster runs here; this is what `benchmarks run --shards` and the
targeted-query test (tests/test_sharding_targeting.py) measure with.

Hashing is MongoDB's hashed-index hash: the first 8 bytes (little-endian) of the MD5 of the seed
(int32 0), the value's canonical BSON type (int32) and the value's bytes. A hashed collection
starts with its hash range cut into N equal chunks, one per shard (what `shardCollection` does
on an empty collection with `numInitialChunks` = N), and this model keeps it so: a balanced
cluster. A compound hashed key `{author_id: "hashed", _id: 1}` routes on its hashed prefix; the
simulation keeps each author's statuses in one chunk (they split only past the chunk size).
Unsharded collections live on the primary shard, shard 0.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from app.storage.sharding import plan_by_collection
from benchmarks.stats import mean, rounded

if TYPE_CHECKING:
    from benchmarks.measure import Samples
    from benchmarks.monitor import Window

# MongoDB's canonical BSON type numbers (bsontypes.h canonicalizeBSONType): values of types with
# the same canonical type compare (and hash) alike, e.g. every number is 10.
CANONICAL_NULL = 5
CANONICAL_NUMBER = 10
CANONICAL_STRING = 15
CANONICAL_OBJECT_ID = 35
CANONICAL_BOOL = 40
CANONICAL_DATE = 45
HASH_SEED = 0
HASH_SPACE = 2**64
HASH_MIN = -(2**63)

# Commands with no collection of their own (sessions, transactions, the driver's monitoring):
# they go where the operation's other commands went and add no shard of their own.
NOT_ROUTED = frozenset(
    {"hello", "isMaster", "ismaster", "endSessions", "commitTransaction", "abortTransaction"}
)
# A cursor's continuation goes to the shards its `find`/`aggregate` opened cursors on.
CONTINUATIONS = frozenset({"getMore", "killCursors"})
# The outbox's bookkeeping, the same for every strategy: the worker's claim is a scatter-gather
# by design (docs/scaling.md), so counting it in every write would make each one touch every
# shard and hide what the strategies differ in. It is reported apart (`outbox_shards_per_post`).
MACHINERY = frozenset({"events", "author_leases", "service_config"})


def hash64(value: Any) -> int:
    """MongoDB's hash of a BSON value (BSONElementHasher::hash64, seed 0) for the scalar types
    shard keys here hold: ObjectId, string, number, bool, date, null."""
    if value is None:
        canonical, data = CANONICAL_NULL, b""
    elif isinstance(value, bool):
        canonical, data = CANONICAL_BOOL, b"\x01" if value else b"\x00"
    elif isinstance(value, int | float):
        # Numbers are squashed to a 64-bit integer first: 1 and 1.0 hash alike.
        canonical, data = CANONICAL_NUMBER, struct.pack("<q", int(value))
    elif isinstance(value, ObjectId):
        canonical, data = CANONICAL_OBJECT_ID, value.binary
    elif isinstance(value, str):
        raw = value.encode()
        canonical, data = CANONICAL_STRING, struct.pack("<i", len(raw) + 1) + raw + b"\x00"
    elif isinstance(value, datetime):
        millis = int(value.timestamp() * 1000)
        canonical, data = CANONICAL_DATE, struct.pack("<q", millis)
    else:
        raise TypeError(f"no hashed shard key of type {type(value).__name__} here")
    digest = hashlib.md5(
        struct.pack("<i", HASH_SEED) + struct.pack("<i", canonical) + data, usedforsecurity=False
    ).digest()
    result: int = struct.unpack("<q", digest[:8])[0]
    return result


def shard_of(value: Any, shards: int) -> int:
    """The shard holding `value`'s chunk when the hash range is cut into `shards` equal chunks."""
    return (hash64(value) - HASH_MIN) * shards // HASH_SPACE


def key_values(flt: Mapping[str, Any], field_name: str) -> list[Any] | None:
    """The values of `field_name` a filter pins it to (equality, `$eq`, `$in`, through `$and`,
    and `$or` when every branch pins it), or None when it does not: a broadcast."""
    if field_name in flt:
        cond = flt[field_name]
        if isinstance(cond, Mapping) and any(str(k).startswith("$") for k in cond):
            if "$eq" in cond:
                return [cond["$eq"]]
            if "$in" in cond:
                return list(cond["$in"])
        else:
            return [cond]
    for clause in flt.get("$and", []):
        values = key_values(clause, field_name)
        if values is not None:
            return values
    if "$or" in flt:
        branches = [key_values(clause, field_name) for clause in flt["$or"]]
        if branches and all(b is not None for b in branches):
            return [v for b in branches if b is not None for v in b]
    return None


@dataclass(frozen=True)
class Routed:
    """Where one command goes under the plan: `shards` None means every shard (a broadcast).
    `writes` attributes the documents it wrote to shards (None: to every one it touched)."""

    collection: str
    shards: frozenset[int] | None
    writes: dict[int | None, float] = field(default_factory=dict)

    @property
    def broadcast(self) -> bool:
        return self.shards is None


def _filters(name: str, cmd: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The filters a read or write command routes by; None for a command that is not routed
    by a filter (inserts route by their documents)."""
    if name == "find":
        return [cmd.get("filter", {})]
    if name in ("count", "distinct"):
        return [cmd.get("query", {})]
    if name == "findAndModify":
        return [cmd.get("query", {})]
    if name == "aggregate":
        pipeline = cmd.get("pipeline", [])
        first = pipeline[0] if pipeline else {}
        return [first.get("$match", {})]
    if name == "update":
        return [u["q"] for u in cmd.get("updates", [])]
    if name == "delete":
        return [d["q"] for d in cmd.get("deletes", [])]
    return None


def _collection(name: str, cmd: Mapping[str, Any]) -> str:
    return str(cmd.get(name, ""))


def route(name: str, cmd: Mapping[str, Any], shards: int, *, written: int = 0) -> Routed | None:
    """Route one command; None for commands that are not routed on their own (see NOT_ROUTED,
    CONTINUATIONS) or that are not on a collection of the plan. `written`: the documents the
    reply said it wrote, spread over the statements that did the writing."""
    if name in NOT_ROUTED or name in CONTINUATIONS:
        return None
    coll = _collection(name, cmd)
    plan = plan_by_collection().get(coll)
    if plan is None:
        return None
    key = plan.routing_field
    if key is None:  # unsharded: the primary shard
        return Routed(coll, frozenset({0}), {0: float(written)} if written else {})
    if name == "insert":
        docs = cmd.get("documents", [])
        targets = [shard_of(d.get(key), shards) for d in docs]
        writes = _spread(written, [[t] for t in targets])
        return Routed(coll, frozenset(targets), writes)
    filters = _filters(name, cmd)
    if filters is None:
        return None
    per_statement: list[list[int] | None] = []
    for flt in filters:
        values = key_values(flt, key)
        per_statement.append(None if values is None else [shard_of(v, shards) for v in values])
    if any(s is None for s in per_statement):
        return Routed(coll, None, _spread(written, per_statement))
    touched = frozenset(t for s in per_statement if s is not None for t in s)
    return Routed(coll, touched, _spread(written, per_statement))


def _spread(written: int, statements: Sequence[Sequence[int] | None]) -> dict[int | None, float]:
    """Attribute `written` documents to shards: evenly over the statements, and each statement's
    share evenly over the shards it targets (None: a broadcast, spread over all shards later).
    A statement's documents are mostly one per statement here (inserts, keyed upserts); a
    multi-document update pinned to one shard is exact too."""
    out: defaultdict[int | None, float] = defaultdict(float)
    if not written or not statements:
        return {}
    share = written / len(statements)
    for targets in statements:
        if targets is None:
            out[None] += share
        else:
            distinct = set(targets)
            for t in distinct:
                out[t] += share / len(distinct)
    return dict(out)


@dataclass
class OpShards:
    """What one operation (all the commands of one API call and the worker's drain) touched."""

    shards: set[int] = field(default_factory=set)
    broadcasts: int = 0
    commands: int = 0
    writes: defaultdict[int, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def docs_written(self) -> float:
        return float(sum(self.writes.values()))

    def largest_write_share(self) -> float | None:
        total = self.docs_written
        return max(self.writes.values()) / total if total else None


def route_operation(
    sent: Iterable[tuple[str, Mapping[str, Any], int]],
    shards: int,
    *,
    only: Callable[[str], bool] = lambda collection: True,
) -> OpShards:
    """Route every command of one operation: (command name, command, documents written), of the
    collections `only` accepts."""
    op = OpShards()
    for name, cmd, written in sent:
        routed = route(name, cmd, shards, written=written)
        if routed is None or not only(routed.collection):
            continue
        op.commands += 1
        if routed.shards is None:
            op.broadcasts += 1
            op.shards.update(range(shards))
        else:
            op.shards.update(routed.shards)
        for shard, docs in routed.writes.items():
            if shard is None:
                for s in range(shards):
                    op.writes[s] += docs / shards
            else:
                op.writes[shard] += docs
    return op


# -- `benchmarks run --shards` ------------------------------------------------------------------


def _data(collection: str) -> bool:
    return collection not in MACHINERY


def _machinery(collection: str) -> bool:
    return collection in MACHINERY


def route_window(window: Window, shards: int, only: Callable[[str], bool] = _data) -> OpShards:
    return route_operation(((s.name, s.command, s.written) for s in window.sent), shards, only=only)


def _mean_shards(windows: Sequence[Window], shards: int) -> float | None:
    return rounded(mean([float(len(route_window(w, shards).shards)) for w in windows]))


def new_results(counts: Sequence[int]) -> dict[str, Any]:
    return {"counts": list(counts), "strategies": {}, "big_author": {}}


def add_strategy(
    results: dict[str, Any],
    name: str,
    samples: Samples,
    sweep_windows: Mapping[int, tuple[list[Window], list[Window]]],
) -> None:
    """Route one strategy's measured operations with each shard count into `results`: mean
    shards touched per operation kind (the mix), and for the sweep's biggest author (5,000
    friends in the full run) its posts' largest per-shard share of documents written."""
    ops: dict[str, list[Window]] = {
        "read": samples.read_windows,
        "refresh": samples.refresh_windows,
        **{kind: [s.window for s in ws] for kind, ws in samples.writes.items()},
    }
    per_count: dict[str, Any] = {}
    for n in results["counts"]:
        row: dict[str, Any] = {kind: _mean_shards(ws, n) for kind, ws in ops.items()}
        row["broadcasts_per_read"] = rounded(
            mean([float(route_window(w, n).broadcasts) for w in samples.read_windows])
        )
        row["outbox_shards_per_post"] = rounded(
            mean([float(len(route_window(w, n, _machinery).shards)) for w in ops.get("post", [])])
        )
        per_count[str(n)] = row
    results["strategies"][name] = per_count
    if not sweep_windows:
        return
    level = max(sweep_windows)
    reads, posts = sweep_windows[level]
    big: dict[str, Any] = {"friends": level}
    for n in results["counts"]:
        routed = [route_window(w, n) for w in posts]
        shares = [r.largest_write_share() for r in routed]
        big[str(n)] = {
            "read_shards": _mean_shards(reads, n),
            "post_shards": rounded(mean([float(len(r.shards)) for r in routed])),
            "post_docs_written": rounded(mean([r.docs_written for r in routed])),
            "post_largest_shard_share": rounded(mean([s for s in shares if s is not None]), 3),
        }
    results["big_author"][name] = big
