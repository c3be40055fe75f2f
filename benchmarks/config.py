"""The options of `python -m benchmarks run`, with the full and the `--quick` defaults."""

from __future__ import annotations

from dataclasses import dataclass

from app.strategies import STRATEGY_NAMES

# Peers measured beside the strategies: Mastodon's layout (benchmarks/redis_peer.py), skipped
# with a note when no redis-server is on PATH.
REDIS_PEER = "redis_sorted_set"
BENCH_NAMES: tuple[str, ...] = (*STRATEGY_NAMES, REDIS_PEER)

# Every timeline read in the benchmark asks for one page of this size, as the API's default.
PAGE_LIMIT = 20

# Full run: sized to finish in about ten minutes on 2 cores against the embedded server (whose
# writes run at ~3,000 documents/s, and whose `$in` costs grow with the square of the list),
# while still holding 5,000 ordinary users, so that one probe user can have 5,000 friends.
FULL_USERS = 5200
FULL_AVG_FRIENDS = 6
FULL_STATUSES = 6000
FULL_READS = 300
FULL_SWEEP = (10, 100, 1000, 5000)
FULL_REPEATS = 5
# A sweep level stops repeating a read (or a post) once this much time went into it (at least
# one sample is always taken): one fan-out-on-read page over 5,000 friends takes over a minute
# on the embedded server.
SWEEP_BUDGET_S = 10.0

# --quick: about a minute on 2 cores (CI); the sweep stops at 1,000 friends.
QUICK_USERS = 1050
QUICK_AVG_FRIENDS = 4
QUICK_STATUSES = 1000
QUICK_READS = 60
QUICK_SWEEP = (10, 100, 1000)
QUICK_REPEATS = 3
# The ground truth is a `$in` over the friend list, whose cost grows with the square of the list
# on the embedded server (~2 s at 1,000, minutes at 5,000): the checks stop below that.
FULL_CHECK_MAX_FRIENDS = 1000
QUICK_CHECK_MAX_FRIENDS = 100


@dataclass(frozen=True)
class RunConfig:
    strategies: tuple[str, ...] = BENCH_NAMES
    users: int = FULL_USERS
    avg_friends: int = FULL_AVG_FRIENDS
    statuses: int = FULL_STATUSES
    reads: int = FULL_READS
    sweep: tuple[int, ...] = FULL_SWEEP
    repeats: int = FULL_REPEATS
    seed: int = 1
    # Probe users up to this many friends are compared with the ground truth after loading.
    check_max_friends: int = FULL_CHECK_MAX_FRIENDS
    timeline_max: int = 1000
    quick: bool = False
    mongodb_url: str | None = None
    keep_data: bool = False
    # Filled in by the CLI: which database each strategy's copy of the workload lives in.
    db_prefix: str = "bench"
    # `--shards`: shard counts to route the measured commands through (benchmarks.shards).
    shards: tuple[int, ...] = ()

    @property
    def writes(self) -> int:
        """Write operations in the mix: one for every WRITE_EVERY reads (a read-heavy mix)."""
        return max(4, self.reads // WRITE_EVERY)


# The mix is read-heavy, as timelines are: about one write for every eight reads.
WRITE_EVERY = 8
