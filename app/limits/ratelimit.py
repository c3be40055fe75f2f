"""Rate limits: named fixed-window counters per token, per client address or per account, kept in
MongoDB so that every API process shares them (no other server is needed).

A *rule* is a name, a limit and a period (`RULES` in app.limits.ratelimit_rules, Mastodon's figures,
overridable with `RATE_LIMITS`); which rules a request counts against is decided by its method
and path (`rules_for`: sign-up and login by path, everything else by token and address), so a
path group added later (the Mastodon API under /api/v1, /api/v2 and /oauth) is covered by the
table alone.
Code that learns something only after the fact (a *failed* login) counts it with `hit`.

A counter is one document `{_id: "<rule>|<key>|<window>", n, expires_at}` in `rate_limits`,
removed after `expires_at` by the workers' housekeeping (fanout.housekeeping), incremented by
unordered bulks of upserts (atomic per document:
concurrent processes never lose an increment) and read back by `_id $in` queries.

Each process counts locally and syncs with those documents in the background (`Limiter.count`),
so that an admitted request usually costs no round trip (issue 23: the two it cost were two of
the six of a timeline page over HTTP). Per counter a process keeps the shared total as last read
(`known`) and the hits it admitted since that read began (`unseen`, sent at the next sync). A
request is admitted at once when every counter it hits has been read in this process, is under
its limit counting `unseen`, and has `unseen` below the rule's *local allowance*
(`limit // LOCAL_SHARE`, 2 %: 6 of 300 reads); otherwise it waits for a sync that carries its
hit (the first hit of a counter in a process, every hit of a rule whose allowance is 0: sign-ups,
logins, post bursts, failed logins, as exact as before). A sync (every SYNC_INTERVAL_S while hits
are unsent, or for such a request) sends every unsent hit in one bulk and reads the totals back.
The bound that follows: hits admitted beyond the limit in one window are at most the unseen
hits of the processes that counted it, `allowance × processes` (each process admits no more than
its allowance against a total it has not read back; a process that restarts counts again, and
one stopped loses its unsent hits, at most its allowance). A refusal is never early: counts only
grow within a window, so a total read here is a lower bound. The count of a request that waited
for a sync includes its own hit and perhaps a concurrent one's, so at the boundary of a window
it may be refused one early under a race.

Keys never hold a secret: a token is keyed by its SHA-256 (as it is stored), an address by its
text (IPv6 by its /64, as Mastodon: one host has a whole /64), an account by its id.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pymongo
from pymongo import IndexModel, UpdateOne
from pymongo.errors import OperationFailure, PyMongoError

from app.domain.errors import DomainError
from app.limits.ratelimit_rules import (
    EXEMPT_PATHS,
    MAX_KEY_CHARS,
    PATH_RULES,
    RULES,
    PathRule,
    Rule,
    client_address,
    client_ip,
    parse_rules,
    period_text,
    rules_for,
    token_key,
)
from app.storage.chunks import chunked
from app.storage.store import Collection

__all__ = [
    "EXEMPT_PATHS",
    "PATH_RULES",
    "RULES",
    "Limiter",
    "PathRule",
    "Quota",
    "RateLimited",
    "Rule",
    "check",
    "client_address",
    "client_ip",
    "hit",
    "parse_rules",
    "rules_for",
    "tightest",
    "token_key",
]

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.context import AppContext

log = logging.getLogger("timeline.ratelimit")

COLLECTION = "rate_limits"
# A counter document outlives its window by this much, so that a clock a little behind ours in
# another process still finds it (the housekeeping runs once a minute anyway).
EXPIRY_SLACK_S = 60
# Expiry's range (fanout.housekeeping). Not a TTL index: the embedded server's TTL monitor
# decodes every kept document of a collection with one, under its storage lock, once a minute.
EXPIRY_INDEX = IndexModel([("expires_at", 1), ("_id", 1)])
# The TTL index of earlier versions, dropped where found (the limiter owns this collection's
# indexes, so it migrates them itself). MongoDB's code for dropping an index that is not there:
# another process dropped it first.
LEGACY_TTL_INDEX = "expires_at_1"
INDEX_NOT_FOUND = 27
# The limiter waits this long for the database at most: during an outage the request itself
# answers 503 after the driver's timeout, and the limiter must not double that wait.
LIMITER_TIMEOUT_S = 2.0
# Counters a process remembers at most; past it, those whose window ended are dropped, then
# those with nothing unsent (a dropped one costs one sync when it is hit again).
MAX_COUNTERS = 100_000
# A rule admits up to limit // LOCAL_SHARE hits per process without a round trip (the module
# docstring): 2 % of the limit, so that the overshoot across processes stays a small share of it
# (6 reads of 300 per process and window), while a client within its limits syncs about once per
# allowance at worst (every 6th read here, and once per SYNC_INTERVAL_S at most in the background).
LOCAL_SHARE = 50
# While hits are unsent, a process sends them this often: the shared totals are at most this
# stale for hits other processes admitted, and each process costs the database two round trips
# per interval at most, however many requests it admits (`benchmarks http`).
SYNC_INTERVAL_S = 0.2
# Counters read back per `$in`: the embedded server's `$in` costs grow with the square of the
# list (README, "Known limits").
READ_CHUNK = 200


class RateLimited(DomainError):
    """A rule is over its limit for this key until `reset_at` (UTC)."""

    code = "rate_limited"

    def __init__(self, rule: Rule, reset_at: float, now: float) -> None:
        self.rule = rule
        self.reset_at = reset_at
        self.retry_after_s = max(1, math.ceil(reset_at - now))
        super().__init__(
            f"too many requests ({rule.name}: {rule.limit} per {period_text(rule.period_s)}); "
            f"retry in {self.retry_after_s} s"
        )


@dataclass(frozen=True)
class Quota:
    """One counter after a hit: what the X-RateLimit-* headers report."""

    rule: Rule
    count: int
    reset_at: float

    @property
    def remaining(self) -> int:
        return max(0, self.rule.limit - self.count)

    @property
    def over(self) -> bool:
        return self.count > self.rule.limit


@dataclass
class _Counter:
    """One counter as this process sees it: `known` the shared total as last read, `inflight`
    hits sent by the sync under way, `unsent` hits admitted since."""

    rule: Rule
    reset_at: float
    known: int = 0
    inflight: int = 0
    unsent: int = 0
    read: bool = False

    @property
    def estimate(self) -> int:
        """A lower bound of the shared total with every hit this process admitted."""
        return self.known + self.inflight + self.unsent

    @property
    def unseen(self) -> int:
        """Hits admitted here since the last read began (not in `known`)."""
        return self.inflight + self.unsent


class Limiter:
    """The rules in force and their counters (the `rate_limits` collection of one database).
    `rules` None: limiting is off, every check admits without a round trip. A limiter that has
    counted runs a background sync while hits are unsent; `close` stops it."""

    def __init__(
        self,
        coll: Collection,
        rules: Mapping[str, Rule] | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coll = coll
        self.rules = rules
        self.clock = clock
        # By the counter's _id (the window is part of it).
        self._counters: dict[str, _Counter] = {}
        self._sync_lock = asyncio.Lock()
        # Syncs begun so far: a request waiting for one that carries its hit waits for any that
        # began after the hit was added.
        self._syncs_begun = 0
        self._background: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.rules is not None

    async def ensure_indexes(self) -> None:
        await self.coll.create_indexes([EXPIRY_INDEX])
        if LEGACY_TTL_INDEX in await self.coll.index_information():
            try:
                await self.coll.drop_index(LEGACY_TTL_INDEX)
            except OperationFailure as exc:
                if exc.code != INDEX_NOT_FOUND:
                    raise

    async def count(self, hits: list[tuple[str, str]]) -> list[Quota]:
        """Count one hit of each (rule name, key) and return the counters after it. Raises
        RateLimited for the over-limit rule that resets last (so that its Retry-After covers
        every refusal); a rule missing from the table (limiting off) is not counted."""
        if self.rules is None:
            return []
        now = float(self.clock())
        counters = [self._state(self.rules[name], key, now) for name, key in hits]
        if not counters:
            return []
        self._refuse_known(counters, now)
        local = all(
            c.read and c.unseen < c.rule.limit // LOCAL_SHARE and c.estimate < c.rule.limit
            for c in counters
        )
        for c in counters:
            c.unsent += 1
        if local:
            self._sync_soon()
        else:
            await self._sync_after_hit()
        quotas = [Quota(c.rule, c.estimate, c.reset_at) for c in counters]
        over = [q for q in quotas if q.over]
        if over:
            worst = max(over, key=lambda q: q.reset_at)
            raise RateLimited(worst.rule, worst.reset_at, now)
        return quotas

    def _refuse_known(self, counters: list[_Counter], now: float) -> None:
        """Refuse without a round trip a hit of a counter known at its limit: a count only grows
        within its window, so it stays there until the window ends, and a flood of refused
        requests costs the database nothing."""
        known = [c for c in counters if c.estimate >= c.rule.limit]
        if known:
            worst = max(known, key=lambda c: c.reset_at)
            raise RateLimited(worst.rule, worst.reset_at, now)

    def _state(self, rule: Rule, key: str, now: float) -> _Counter:
        rule, doc_id, reset_at = self._counter(rule, key, now)
        found = self._counters.get(doc_id)
        if found is None:
            if len(self._counters) >= MAX_COUNTERS:
                self._forget(now)
            found = self._counters[doc_id] = _Counter(rule, reset_at)
        return found

    def _forget(self, now: float) -> None:
        """Make room: drop the counters whose window ended, then those with nothing unsent."""
        self._counters = {k: c for k, c in self._counters.items() if c.reset_at > now}
        if len(self._counters) >= MAX_COUNTERS:
            self._counters = {k: c for k, c in self._counters.items() if c.unseen}

    async def _sync_after_hit(self) -> None:
        """Wait for a sync that began after the hits just added (a running one may have taken
        its snapshot before them)."""
        begun = self._syncs_begun
        async with self._sync_lock:
            if self._syncs_begun == begun:
                await self._sync()

    async def _sync(self) -> None:
        """Send every unsent hit (one unordered bulk) and read back the totals of those counters
        and of the counters not read yet. Hits that fail to be sent stay unsent (a retry may count
        one twice: an error that can only refuse early, never admit more)."""
        self._syncs_begun += 1
        batch = [(k, c, c.unsent) for k, c in self._counters.items() if c.unsent or not c.read]
        if not batch:
            return
        for _, c, n in batch:
            c.unsent -= n
            c.inflight += n
        totals: dict[str, int] = {}
        try:
            with pymongo.timeout(LIMITER_TIMEOUT_S):
                ops = [
                    UpdateOne(
                        {"_id": doc_id},
                        {
                            "$inc": {"n": n},
                            "$setOnInsert": {
                                "expires_at": datetime.fromtimestamp(
                                    c.reset_at + EXPIRY_SLACK_S, UTC
                                )
                            },
                        },
                        upsert=True,
                    )
                    for doc_id, c, n in batch
                    if n
                ]
                if ops:
                    await self.coll.bulk_write(ops, ordered=False)
                ids = [doc_id for doc_id, _, _ in batch]
                for chunk in chunked(ids, READ_CHUNK):
                    async for d in self.coll.find({"_id": {"$in": chunk}}, {"n": 1}):
                        totals[d["_id"]] = int(d["n"])
        except BaseException:
            for _, c, n in batch:
                c.inflight -= n
                c.unsent += n
            raise
        for doc_id, c, n in batch:
            c.inflight -= n
            c.known = max(c.known, totals.get(doc_id, 0))
            c.read = True

    def _sync_soon(self) -> None:
        """Make sure unsent hits are sent within SYNC_INTERVAL_S (a background task that ends
        once nothing is left unsent)."""
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(
                self._sync_in_background(), name="rate-limit-sync"
            )

    async def _sync_in_background(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            self._forget_ended()
            if not any(c.unsent for c in self._counters.values()):
                return
            try:
                async with self._sync_lock:
                    await self._sync()
                failing = False
            except PyMongoError:
                # The requests meet the same outage; the hits are sent once it is over. One line
                # per outage: it must not flood the log.
                if not failing:
                    log.warning("rate limit counters not synced; retrying until they are")
                failing = True

    def _forget_ended(self) -> None:
        now = float(self.clock())
        if any(c.reset_at <= now for c in self._counters.values()):
            self._counters = {k: c for k, c in self._counters.items() if c.reset_at > now}

    async def close(self) -> None:
        """Stop the background sync. Hits still unsent are not sent: at most one allowance per
        counter, within the bound the module docstring states for a stopped process."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def check(self, name: str, key: str) -> None:
        """Raise RateLimited if `name` has nothing left for `key` (its count has reached the
        limit), counting nothing: before an attempt that a failure would count (a login for an
        account whose failed logins have reached the limit is refused, even a right one, so
        no more than `limit` guesses are ever tried)."""
        if self.rules is None:
            return
        now = float(self.clock())
        rule, doc_id, reset_at = self._counter(self.rules[name], key, now)
        known = self._counters.get(doc_id)
        if known is not None:
            self._refuse_known([known], now)
        with pymongo.timeout(LIMITER_TIMEOUT_S):
            doc = await self.coll.find_one({"_id": doc_id})
        if doc is not None and Quota(rule, int(doc["n"]), reset_at).remaining == 0:
            raise RateLimited(rule, reset_at, now)

    @staticmethod
    def _counter(rule: Rule, key: str, now: float) -> tuple[Rule, str, float]:
        """(rule, the counter's _id in the window of `now`, when that window ends)."""
        window = int(now // rule.period_s)
        reset_at = float((window + 1) * rule.period_s)
        return rule, f"{rule.name}|{key[:MAX_KEY_CHARS]}|{window}", reset_at


def tightest(quotas: list[Quota]) -> Quota | None:
    """The counter closest to its limit (what X-RateLimit-* report on an admitted request)."""
    return min(quotas, key=lambda q: (q.remaining, -q.reset_at), default=None)


async def hit(ctx: AppContext, rule: str, key: str) -> None:
    """Count one `rule` hit for `key` and raise RateLimited (429) once it is over the limit: after
    a failed login, `hit(ctx, "failed_login", f"account:{account_id}")` and
    `hit(ctx, "failed_login", f"address:{address}")` (`request_address` gives the address)."""
    if rule not in RULES:
        raise ValueError(f"unknown rate limit rule {rule!r}")
    await ctx.limiter.count([(rule, key)])


async def check(ctx: AppContext, rule: str, key: str) -> None:
    """Raise RateLimited (429) if `rule` is over its limit for `key`, counting nothing: before a
    login, `check(ctx, "failed_login", f"account:{account_id}")`."""
    if rule not in RULES:
        raise ValueError(f"unknown rate limit rule {rule!r}")
    await ctx.limiter.check(rule, key)
