"""The rules of the rate limits (app.limits.ratelimit): their names, limits and periods (Mastodon's
defaults, overridable with RATE_LIMITS), which of them a request counts against (by method and
path: sign-up and login by path, everything else by token and address), and what a request is
keyed by (its token's digest, its client address)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

KeyKind = Literal["token", "address", "account"]

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
# in docs/security.md, and one of ours: `posts_burst`, because Mastodon's 300 posts per 3 hours
# may all come in one burst (the probe: 1,000 in 22.5 s, a 757-event backlog that saturated the
# embedded database so that every author's fan-out waited), while 4 per 2 s (two a second on
# average, at most 8 across a window boundary) is more than a person posts, leaves room for one
# a second (the benchmark's light authors) and keeps one account's bursts short: with 20 per
# 10 s, the light authors' p99 in `python -m benchmarks fair` was 3.1x their unloaded figure
# (each window opened with 20 long posts at once), with 4 per 2 s 1.9x. A request counts against its
# path's rules, its token's rule (reads or writes) and the address rule, and is refused when
# any of them is over.
RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("sign_up", 5, 30 * 60, "address", "sign-ups (POST /users, POST /api/v1/accounts)"),
        Rule("login", 25, 5 * 60, "address", "login attempts (POST /oauth/token)"),
        Rule("failed_login", 25, 3600, "account", "failed logins, per account and per address"),
        Rule("posts", 300, 3 * 3600, "token", "statuses posted (POST /statuses, /api/v1/statuses)"),
        Rule("posts_burst", 4, 2, "token", "statuses posted within 2 s (the same requests)"),
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
    PathRule("POST", re.compile(r"^/statuses/?$"), "posts_burst"),
    PathRule("POST", re.compile(r"^/api/v1/statuses/?$"), "posts"),
    PathRule("POST", re.compile(r"^/api/v1/statuses/?$"), "posts_burst"),
    PathRule("POST", re.compile(r"^/friend-requests/?$"), "friend_requests"),
    PathRule("POST", re.compile(r"^/api/v1/accounts/[^/]+/follow/?$"), "friend_requests"),
    PathRule("POST", re.compile(r"^/api/v1/follow_requests/[^/]+/authorize/?$"), "friend_requests"),
)


def period_text(seconds: int) -> str:
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
