"""The failed-login limit of `POST /oauth/token`'s password grant: per account and per address,
counted in MongoDB (`login_failures`, removed by a TTL index), so every API process shares the
counts. Only failures count: a person who types their password right is never slowed down.

`guarded_login` is the one entry point (so that a general rate limiter can take it over).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from app.models import utcnow
from app.oauth import InvalidGrant, TooManyRequests
from app.store import Store
from app.users import Account

# The window failures are counted in; a key is free again when its window ends.
FAILURE_WINDOW = timedelta(minutes=15)
# Per account: more than anyone mistypes in a quarter of an hour, and it caps online guessing
# of one password at 40 tries an hour (Mastodon allows 5 e-mail sign-ins per 30 min per address).
MAX_ACCOUNT_FAILURES = 10
# Per address: one client guessing across many accounts. Higher, since people behind one NAT
# share an address; the address is the TCP peer's (a proxy in front should pass the limit on).
MAX_ADDRESS_FAILURES = 50

BAD_LOGIN = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)


def _keys(login: str, address: str) -> list[tuple[str, int]]:
    return [
        (f"account:{login.strip().lower()}", MAX_ACCOUNT_FAILURES),
        (f"address:{address}", MAX_ADDRESS_FAILURES),
    ]


async def _check(store: Store, key: str, limit: int) -> None:
    now = utcnow()
    doc = await store.login_failures.find_one({"_id": key, "expires_at": {"$gt": now}})
    if doc is not None and doc["failures"] >= limit:
        expires = doc["expires_at"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=now.tzinfo)
        retry = max(1, int((expires - now).total_seconds()) + 1)
        raise TooManyRequests(
            "Too many failed login attempts; try again later", retry_after_s=retry
        )


async def _count_failure(store: Store, key: str) -> None:
    """+1 in the key's current window, or a new window at 1. Conditional writes only, so
    concurrent failures of one key are each counted (an expired window is replaced by one
    update whose condition is that it is still expired)."""
    coll = store.login_failures
    for _ in range(3):
        now = utcnow()
        live = await coll.update_one(
            {"_id": key, "expires_at": {"$gt": now}}, {"$inc": {"failures": 1}}
        )
        if live.matched_count:
            return
        fresh = {"failures": 1, "window_start": now, "expires_at": now + FAILURE_WINDOW}
        with contextlib.suppress(DuplicateKeyError):
            await coll.insert_one({"_id": key, **fresh})
            return
        renewed = await coll.update_one({"_id": key, "expires_at": {"$lte": now}}, {"$set": fresh})
        if renewed.matched_count:
            return


async def guarded_login(
    store: Store, login: str, address: str, attempt: Callable[[], Awaitable[Account | None]]
) -> Account:
    """Run `attempt` (a password check) unless `login` or `address` has too many recent
    failures (TooManyRequests, with the seconds to wait). A failed attempt is counted against
    both and is InvalidGrant, as Mastodon answers a wrong password; a successful one clears the
    account's count."""
    keys = _keys(login, address)
    for key, limit in keys:
        await _check(store, key, limit)
    user = await attempt()
    if user is None:
        for key, _ in keys:
            await _count_failure(store, key)
        raise InvalidGrant(BAD_LOGIN)
    await store.login_failures.delete_one({"_id": keys[0][0]})
    return user
