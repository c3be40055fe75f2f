"""The failed-login limit of `POST /oauth/token`'s password grant, on the service's one rate
limiter: app.limits.ratelimit's `failed_login` rule, counted per account and per client address in
MongoDB, so every API process shares the counts (docs/security.md, "Rate limits"). Only
failures count: a person who types their password right is never slowed down. Over the limit
is a 429 with `Retry-After` and the `X-RateLimit-*` headers, as every other limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.context import AppContext
from app.domain.oauth import InvalidGrant
from app.domain.users import Account
from app.limits import ratelimit

RULE = "failed_login"

BAD_LOGIN = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)


def _keys(login: str, address: str) -> list[str]:
    return [f"account:{login.strip().lower()}", f"address:{address}"]


async def guarded_login(
    ctx: AppContext, login: str, address: str, attempt: Callable[[], Awaitable[Account | None]]
) -> Account:
    """Run `attempt` (a password check) unless `login` or `address` is over the failed-login
    limit (RateLimited). A failed attempt is counted against both and is InvalidGrant, as
    Mastodon answers a wrong password (RateLimited instead when it is the one over the limit)."""
    keys = _keys(login, address)
    for key in keys:
        await ratelimit.check(ctx, RULE, key)
    user = await attempt()
    if user is None:
        for key in keys:
            await ratelimit.hit(ctx, RULE, key)
        raise InvalidGrant(BAD_LOGIN)
    return user
