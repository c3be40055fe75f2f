"""Rate limits: named fixed-window counters per token, per client address or per account, kept in
MongoDB so that every API process shares them (no other server is needed).

A *rule* is a name, a limit and a period (`RULES`, Mastodon's figures, overridable with
`RATE_LIMITS`); which rules a request counts against is decided by its method and path
(`rules_for`: sign-up and login by path, everything else by token and address), so a path group
added later (the Mastodon API under /api/v1, /api/v2 and /oauth) is covered by the table alone.
Code that learns something only after the fact (a *failed* login) counts it with `hit`.

A counter is one document `{_id: "<rule>|<key>|<window>", n, expires_at}` in `rate_limits`, with
a TTL index on `expires_at`. One request's counters are incremented by one unordered bulk of
upserts (atomic per document: concurrent requests never lose an increment) and read back by one
`_id $in` query: two round trips, whatever the number of rules. Not one `find_one_and_update` per
counter: the embedded server answers every findAndModify by scanning the whole collection (52 ms
per call at 5,000 counters, against 1.5 ms for an update and a find, measured here). The count
read back includes this request's increment and perhaps a concurrent one's, so at the boundary
of a window a request may be refused one early under a race, never admitted past the limit.

Keys never hold a secret: a token is keyed by its SHA-256 (as it is stored), an address by its
text (IPv6 by its /64, as Mastodon: one host has a whole /64), an account by its id.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import pymongo
from pymongo import IndexModel, UpdateOne

from app.errors import DomainError
from app.store import Collection

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.context import AppContext

KeyKind = Literal["token", "address", "account"]

COLLECTION = "rate_limits"
# A counter document outlives its window by this much, so that a clock a little behind ours in
# another process still finds it (the TTL monitor runs once a minute anyway).
EXPIRY_SLACK_S = 60
# The limiter waits this long for the database at most: during an outage the request itself
# answers 503 after the driver's timeout, and the limiter must not double that wait.
LIMITER_TIMEOUT_S = 2.0
# A key is bounded (an address or an account id is short; a token is its 64-hex digest).
MAX_KEY_CHARS = 100
# Periods in settings: "30m", "3h", "1d", "300s" or "300".
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_OVERRIDE = re.compile(r"^\s*(\*|[a-z_]+)\s*=\s*(\d{1,9})\s*/\s*(\d{1,7})\s*([smhd]?)\s*$")


@dataclass(frozen=True)
class Rule:
    """`limit` hits per fixed window of `period_s` seconds, counted per `by` key."""

    name: str
    limit: int
    period_s: int
    by: KeyKind
    description: str


# Mastodon's defaults (config/initializers/rack_attack.rb and app/lib/rate_limiter.rb), named as
# in docs/security.md. A request counts against its path's rule, its token's rule (reads or
# writes) and the address rule, and is refused when any of them is over.
RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("sign_up", 5, 30 * 60, "address", "sign-ups (POST /users, POST /api/v1/accounts)"),
        Rule("login", 25, 5 * 60, "address", "login attempts (POST /oauth/token)"),
        Rule("failed_login", 25, 3600, "account", "failed logins, per account and per address"),
        Rule("posts", 300, 3 * 3600, "token", "statuses posted (POST /statuses, /api/v1/statuses)"),
        Rule("friend_requests", 400, 86400, "token", "friend requests and follows sent"),
        Rule("reads", 300, 5 * 60, "token", "GET and HEAD requests with a token"),
        Rule("writes", 300, 5 * 60, "token", "every other request with a token"),
        Rule("unauthenticated", 300, 5 * 60, "address", "requests without a token"),
        Rule("address", 1500, 5 * 60, "address", "every request from one client address"),
    )
}

# Paths no rule counts: operators' and load balancers' probes (/metrics has its own guard).
EXEMPT_PATHS = frozenset({"/health", "/metrics"})


@dataclass(frozen=True)
class PathRule:
    """Requests with `method` to a path matching `path` count against `rule`."""

    method: str
    path: re.Pattern[str]
    rule: str


# By path: sign-up and login (address-keyed: there is no token yet), and the writes Mastodon
# limits per account. Any path not listed here is still counted by token and by address.
PATH_RULES: tuple[PathRule, ...] = (
    PathRule("POST", re.compile(r"^/users/?$"), "sign_up"),
    PathRule("POST", re.compile(r"^/api/v1/accounts/?$"), "sign_up"),
    PathRule("POST", re.compile(r"^/oauth/token/?$"), "login"),
    PathRule("POST", re.compile(r"^/statuses/?$"), "posts"),
    PathRule("POST", re.compile(r"^/api/v1/statuses/?$"), "posts"),
    PathRule("POST", re.compile(r"^/friend-requests/?$"), "friend_requests"),
    PathRule("POST", re.compile(r"^/api/v1/accounts/[^/]+/follow/?$"), "friend_requests"),
    PathRule("POST", re.compile(r"^/api/v1/follow_requests/[^/]+/authorize/?$"), "friend_requests"),
)


class RateLimited(DomainError):
    """A rule is over its limit for this key until `reset_at` (UTC)."""

    code = "rate_limited"

    def __init__(self, rule: Rule, reset_at: float, now: float) -> None:
        self.rule = rule
        self.reset_at = reset_at
        self.retry_after_s = max(1, math.ceil(reset_at - now))
        super().__init__(
            f"too many requests ({rule.name}: {rule.limit} per {_period(rule.period_s)}); "
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


def _period(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_rules(spec: str) -> dict[str, Rule] | None:
    """The rules under `spec` (the RATE_LIMITS setting): "" keeps the defaults, "off" disables
    every rule (None), else comma-separated "rule=limit/period" overrides, where `*` is every
    rule. ValueError names what is wrong."""
    if spec.strip().lower() == "off":
        return None
    rules = dict(RULES)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _OVERRIDE.match(part)
        if m is None:
            raise ValueError(f"{part!r} is not rule=limit/period (e.g. posts=300/3h)")
        name, limit, amount, unit = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        period = amount * _UNITS[unit or "s"]
        if limit < 1 or period < 1:
            raise ValueError(f"{part!r}: limit and period must be at least 1")
        if name != "*" and name not in RULES:
            raise ValueError(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
        for target in RULES if name == "*" else [name]:
            rules[target] = replace(rules[target], limit=limit, period_s=period)
    return rules


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted_hops: int
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP: with `trusted_hops` proxies in front (each appending to X-Forwarded-For),
    the entry that many from the right; otherwise the socket peer (None: not an IP). Entries to
    the left of it were written by the client and are never believed."""
    if trusted_hops > 0:
        entries = [e.strip() for line in forwarded_for for e in line.split(",") if e.strip()]
        if entries:
            candidate = entries[-trusted_hops] if len(entries) >= trusted_hops else entries[0]
            try:
                return ipaddress.ip_address(candidate)
            except ValueError:
                pass  # a proxy we trust wrote something else: fall back to the peer
    try:
        return None if peer is None else ipaddress.ip_address(peer)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted_hops: int) -> str:
    """The key of the client's address (`client_ip`; IPv6 by its /64)."""
    ip = client_ip(peer, forwarded_for, trusted_hops)
    if ip is None:
        return (peer or "unknown")[:MAX_KEY_CHARS]
    return _address_key(ip)


def _address_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def rules_for(method: str, path: str, has_token: bool) -> list[str]:
    """The rules a request counts against (none for the exempt paths)."""
    if path in EXEMPT_PATHS:
        return []
    names = [r.rule for r in PATH_RULES if r.method == method and r.path.match(path)]
    if has_token:
        names.append("reads" if method in ("GET", "HEAD") else "writes")
    else:
        names.append("unauthenticated")
    names.append("address")
    return names


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

    @property
    def enabled(self) -> bool:
        return self.rules is not None

    async def ensure_indexes(self) -> None:
        await self.coll.create_indexes([IndexModel([("expires_at", 1)], expireAfterSeconds=0)])

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
            worst = max(over, key=lambda q: q.reset_at)
            raise RateLimited(worst.rule, worst.reset_at, now)
        return quotas

    async def check(self, name: str, key: str) -> None:
        """Raise RateLimited if `name` is already over its limit for `key`, counting nothing
        (e.g. refuse a login for an account whose failed logins are over, even a right one)."""
        if self.rules is None:
            return
        now = float(self.clock())
        rule, doc_id, reset_at = self._counter(self.rules[name], key, now)
        with pymongo.timeout(LIMITER_TIMEOUT_S):
            doc = await self.coll.find_one({"_id": doc_id})
        if doc is not None and Quota(rule, int(doc["n"]), reset_at).over:
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
