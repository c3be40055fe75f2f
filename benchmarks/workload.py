"""The benchmark's workload, generated deterministically from a seed, before any database is
touched: a heavy-tailed social graph, statuses spread over authors, one "probe" user per sweep
level with exactly that many friends, and a read-heavy mix of operations.

Everything is in terms of user and status indices plus ObjectIds derived from the seed, so every
strategy's database receives exactly the same documents and the same operations.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bson import ObjectId

from benchmarks.config import RunConfig

OpKind = Literal["read", "refresh", "post", "delete", "friend", "unfriend"]

# Zipf exponent of the friend-count distribution (rank r gets ~C / r**ZIPF_S friends). Below 1,
# so that besides a long tail of users with a few friends there are a handful with ~1,000.
ZIPF_S = 0.7
# The largest friend count the Zipf part may give; the probe users cover the sweep levels above.
ZIPF_CAP = 2000
# Status text length: a typical short post; it sets the bytes written per copy.
TEXT_LENGTH = 80
FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua "
)
# Loaded documents get ids (and so creation times) in a fixed past, one status per second:
# ids are reproducible for a seed and always older than what the benchmark posts at run time.
BASE_TIME = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
# In the mix, a post is repeated this often among the writes; friend, unfriend and delete once.
WRITE_PATTERN: tuple[OpKind, ...] = ("post", "friend", "post", "delete", "post", "unfriend")
# Of the timeline reads in the mix, one in REFRESH_EVERY is a refresh (`after` the newest seen).
REFRESH_EVERY = 3


@dataclass(frozen=True)
class Op:
    kind: OpKind
    user: int
    other: int = -1  # friend/unfriend: the other user; delete: the status index


@dataclass
class Workload:
    user_ids: list[ObjectId]
    handles: list[str]
    friendships: list[tuple[int, int]]
    status_ids: list[ObjectId]
    status_authors: list[int]
    probes: dict[int, int]  # sweep level (friends) -> user index
    ops: list[Op] = field(default_factory=list)

    @property
    def regular_users(self) -> int:
        return len(self.user_ids) - len(self.probes)

    def text(self, status: int) -> str:
        return status_text(status)


def status_text(i: int) -> str:
    head = f"#{i} "
    body = (FILLER * (TEXT_LENGTH // len(FILLER) + 1))[: TEXT_LENGTH - len(head)]
    return head + body


def _oid(rng: random.Random, seconds: int) -> ObjectId:
    return ObjectId(struct.pack(">I", seconds) + rng.randbytes(8))


def zipf_degrees(rng: random.Random, n: int, mean: float) -> list[int]:
    """Friend counts for `n` users, heavy-tailed, averaging about `mean`, randomly assigned."""
    cap = min(ZIPF_CAP, n - 1)
    weights = [1.0 / (r + 1) ** ZIPF_S for r in range(n)]
    lo, hi = 0.0, float(n * max(mean, 1.0))
    # Bisect the scale so that the clamped degrees sum to n * mean.
    for _ in range(60):
        c = (lo + hi) / 2
        total = sum(min(cap, max(1, round(c * w))) for w in weights)
        lo, hi = (c, hi) if total < n * mean else (lo, c)
    degrees = [min(cap, max(1, round(lo * w))) for w in weights]
    rng.shuffle(degrees)
    return degrees


def pair_stubs(rng: random.Random, degrees: list[int]) -> set[tuple[int, int]]:
    """The configuration model: match friend "stubs" at random, dropping self-loops and repeats
    (which lowers the mean a little, and never raises anyone's count)."""
    stubs = [u for u, d in enumerate(degrees) for _ in range(d)]
    rng.shuffle(stubs)
    edges: set[tuple[int, int]] = set()
    for a, b in zip(stubs[::2], stubs[1::2], strict=False):
        if a != b:
            edges.add((min(a, b), max(a, b)))
    return edges


def generate(config: RunConfig) -> Workload:
    if config.sweep and max(config.sweep) > config.users:
        raise ValueError(
            f"--users {config.users} is too small for a sweep level of {max(config.sweep)} friends"
        )
    rng = random.Random(config.seed)
    n = config.users
    edges = pair_stubs(rng, zipf_degrees(rng, n, config.avg_friends))
    probes: dict[int, int] = {}
    for level in config.sweep:
        probe = n + len(probes)
        probes[level] = probe
        edges.update((f, probe) for f in rng.sample(range(n), level))
    total_users = n + len(probes)
    user_ids = [_oid(rng, BASE_TIME - 10_000_000 + i) for i in range(total_users)]
    handles = [f"u{i:05d}" for i in range(n)] + [f"probe_{level}" for level in probes]
    status_authors = [rng.randrange(total_users) for _ in range(config.statuses)]
    status_ids = [_oid(rng, BASE_TIME + i) for i in range(config.statuses)]
    work = Workload(user_ids, handles, sorted(edges), status_ids, status_authors, probes)
    work.ops = _mix(rng, config, work, edges)
    return work


def _mix(
    rng: random.Random, config: RunConfig, work: Workload, edges: set[tuple[int, int]]
) -> list[Op]:
    """Reads with writes interleaved evenly; every write is valid when it runs (a delete targets
    a status not deleted yet, a friend a non-friend, an unfriend a current friend)."""
    n = work.regular_users
    live_edges = {e for e in edges if e[0] < n and e[1] < n}  # probes keep their exact counts
    deletable = list(range(len(work.status_ids)))
    rng.shuffle(deletable)
    writes: list[Op] = []
    for i in range(config.writes):
        kind = WRITE_PATTERN[i % len(WRITE_PATTERN)]
        if kind == "post":
            writes.append(Op("post", rng.randrange(n)))
        elif kind == "delete" and deletable:
            s = deletable.pop()
            writes.append(Op("delete", work.status_authors[s], s))
        elif kind == "friend":
            while True:
                a, b = sorted(rng.sample(range(n), 2))
                if (a, b) not in live_edges:
                    break
            live_edges.add((a, b))
            writes.append(Op("friend", a, b))
        elif kind == "unfriend" and live_edges:
            a, b = rng.choice(sorted(live_edges))
            live_edges.discard((a, b))
            writes.append(Op("unfriend", a, b))
    ops: list[Op] = []
    every = max(1, config.reads // max(1, len(writes)))
    readers: list[int] = []
    for r in range(config.reads):
        if r % REFRESH_EVERY == REFRESH_EVERY - 1 and readers:
            # A refresh continues an earlier reader's session (`after` their newest item).
            ops.append(Op("refresh", rng.choice(readers)))
        else:
            readers.append(rng.randrange(n))
            ops.append(Op("read", readers[-1]))
        if r % every == every - 1 and writes:
            ops.append(writes.pop(0))
    ops += writes
    return ops
