"""Rate limits: named fixed-window counters per token, per client address or per account, kept in
MongoDB so that every API process shares them (no other server is needed).

A *rule* is a name, a limit and a period (`RULES` in app.ratelimit_rules, Mastodon's figures,
overridable with `RATE_LIMITS`); which rules a request counts against is decided by its method
and path (`rules_for`: sign-up and login by path, everything else by token and address), so a
path group added later (the Mastodon API under /api/v1, /api/v2 and /oauth) is covered by the
table alone.
Code that learns something only after the fact (a *failed* login) counts it with `hit`.

A counter is one document `{_id: "<rule>|<key>|<window>", n, expires_at}` in `rate_limits`, removed
after `expires_at` by the workers' housekeeping (fanout.housekeeping). One request's counters are
incremented by one unordered bulk of upserts (atomic per document: concurrent requests never lose
an increment) and read back by one `_id $in` query: two round trips, whatever the number of rules.
Not one `find_one_and_update` per counter: the embedded server answers every findAndModify by
scanning the whole collection (52 ms per call at 5,000 counters, against 1.5 ms for an update and a
find, measured here). The count read back includes this request's increment and perhaps a
concurrent one's, so at the boundary of a window a request may be refused one early under a race,
never admitted past the limit.

Keys never hold a secret: a token is keyed by its SHA-256 (as it is stored), an address by its
text (IPv6 by its /64, as Mastodon: one host has a whole /64), an account by its id.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pymongo
from pymongo import IndexModel, UpdateOne
from pymongo.errors import OperationFailure

from app.errors import DomainError
from app.ratelimit_rules import (
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
from app.store import Collection

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
# Over-limit counters a process remembers at most (`Limiter._refuse_known`); past it, those
# whose window ended are dropped (or all: a miss costs only the round trips it saves).
MAX_KNOWN_OVER = 100_000


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


class Limiter:
    """The rules in force and their counters (the `rate_limits` collection of one database).
    `rules` None: limiting is off, every check admits without a round trip."""

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
        # Counters (by _id: the window is part of it) this process saw over their limit, and
        # when their window ends (`_refuse_known`).
        self._over: dict[str, float] = {}

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
        todo = [self._counter(self.rules[name], key, now) for name, key in hits]
        if not todo:
            return []
        self._refuse_known(todo, now)
        ops = [
            UpdateOne(
                {"_id": doc_id},
                {
                    "$inc": {"n": 1},
                    "$setOnInsert": {
                        "expires_at": datetime.fromtimestamp(reset_at + EXPIRY_SLACK_S, UTC)
                    },
                },
                upsert=True,
            )
            for _, doc_id, reset_at in todo
        ]
        with pymongo.timeout(LIMITER_TIMEOUT_S):
            await self.coll.bulk_write(ops, ordered=False)
            found = {
                d["_id"]: int(d["n"])
                async for d in self.coll.find({"_id": {"$in": [t[1] for t in todo]}})
            }
        quotas = [Quota(rule, found.get(doc_id, 1), reset) for rule, doc_id, reset in todo]
        over = [q for q in quotas if q.over]
        if over:
            self._remember(todo, over, now)
            worst = max(over, key=lambda q: q.reset_at)
            raise RateLimited(worst.rule, worst.reset_at, now)
        return quotas

    def _refuse_known(self, todo: list[tuple[Rule, str, float]], now: float) -> None:
        """Refuse without a round trip a hit of a counter this process saw over its limit: a
        count only grows within its window, so it stays over until the window ends, and a
        flood of refused requests costs the database nothing."""
        known = [(rule, reset) for rule, doc_id, reset in todo if doc_id in self._over]
        if known:
            rule, reset = max(known, key=lambda k: k[1])
            raise RateLimited(rule, reset, now)

    def _remember(self, todo: list[tuple[Rule, str, float]], over: list[Quota], now: float) -> None:
        if len(self._over) >= MAX_KNOWN_OVER:
            self._over = {k: r for k, r in self._over.items() if r > now}
            if len(self._over) >= MAX_KNOWN_OVER:
                self._over.clear()
        rules = {q.rule.name for q in over}
        for rule, doc_id, reset in todo:
            if rule.name in rules:
                self._over[doc_id] = reset

    async def check(self, name: str, key: str) -> None:
        """Raise RateLimited if `name` has nothing left for `key` (its count has reached the
        limit), counting nothing: before an attempt that a failure would count (a login for an
        account whose failed logins have reached the limit is refused, even a right one, so
        no more than `limit` guesses are ever tried)."""
        if self.rules is None:
            return
        now = float(self.clock())
        rule, doc_id, reset_at = self._counter(self.rules[name], key, now)
        self._refuse_known([(rule, doc_id, reset_at)], now)
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
