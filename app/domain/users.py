"""Users and bearer tokens.

A user is read into an `Account`, a plain value built from its document, over the store's
`users` collection. Not the Beanie `User` document: Beanie can build one only while its class is
bound to a database (`CollectionWasNotInitialized` otherwise), and that binding is one per
process, so a second database in the same process would be reached through it (app.storage.store).
`app.storage.models.User` still declares the collection, its fields and its indexes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.domain.errors import Conflict, NotFound, Unauthorized
from app.storage.models import utcnow
from app.storage.store import Store

# 32 random bytes: guessing is hopeless, so a fast hash (sha256) is enough to store; a slow
# password hash would only add latency to every request.
TOKEN_BYTES = 32
# One API process answers a token from its memory for this long after looking it up (TokenCache):
# a revoked token, or one whose account is gone, stops working within this time on every process
# (at once on the process that revoked it). Half a second keeps "within a second" with room to
# spare and still spares 99 look-ups in 100 to a client reading 200 pages a second.
TOKEN_CACHE_S = 0.5
# Tokens one process remembers at most; past it, the expired ones are dropped (or all: a miss
# costs one look-up, as without the cache).
MAX_CACHED_TOKENS = 10_000
# A 404 echoes at most this much of the handle asked for: a real handle is at most 30
# characters, and a 60,000-character path must not come back whole in the body.
MAX_ECHOED_HANDLE = 30


@dataclass(frozen=True)
class Account:
    """A user as stored (app.storage.models.User has the field meanings)."""

    id: ObjectId
    handle: str
    display_name: str | None
    token_hash: str
    created_at: datetime
    friend_count: int = 0
    # What the caller's token allows: None for the account's own token (everything), else the
    # scopes of the Mastodon API access token it authenticated with (app.domain.oauth).
    scopes: frozenset[str] | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Account:
        return cls(
            id=doc["_id"],
            handle=doc["handle"],
            display_name=doc.get("display_name"),
            token_hash=doc["token_hash"],
            created_at=doc["created_at"],
            friend_count=int(doc.get("friend_count", 0)),
        )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def id_of(user: Account) -> ObjectId:
    return user.id


def new_user_doc(
    handle: str,
    display_name: str | None,
    token_hash: str,
    *,
    email: str | None = None,
    password_hash: str | None = None,
) -> dict[str, Any]:
    """A `users` document with every field app.storage.models.User declares (e-mail and password
    hash
    only when given: the e-mail index holds only accounts that have one)."""
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "handle": handle,
        "display_name": display_name,
        "token_hash": token_hash,
        "created_at": utcnow(),
        "friend_count": 0,
    }
    if email is not None:
        doc["email"] = email
    if password_hash is not None:
        doc["password_hash"] = password_hash
    return doc


async def create_user(
    store: Store,
    handle: str,
    display_name: str | None,
    *,
    email: str | None = None,
    password_hash: str | None = None,
) -> tuple[Account, str]:
    """A new user and its own token (shown once). Conflict `handle_taken` or `email_taken`."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    doc = new_user_doc(
        handle, display_name, hash_token(token), email=email, password_hash=password_hash
    )
    try:
        await store.users.insert_one(doc)
    except DuplicateKeyError as exc:
        if _duplicate_email(exc):
            raise Conflict("the e-mail address is taken", code="email_taken") from None
        raise Conflict(f"the handle {handle!r} is taken", code="handle_taken") from None
    return Account.from_doc(doc), token


def _duplicate_email(exc: DuplicateKeyError) -> bool:
    """Whether the duplicate is on the e-mail index (its key pattern, or its name `email_1` in
    the message where a server sends no key pattern)."""
    details = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, dict):
        return "email" in pattern
    return "email_1" in str(details.get("errmsg", exc))


async def authenticate(store: Store, token: str) -> Account:
    """The user of `token`: the account's own token (every scope), or an access token minted by
    the Mastodon API (app.domain.oauth) with its scopes. An application's own token has no user and
    is refused here like an unknown one."""
    return await _authenticate(store, hash_token(token))


async def _authenticate(store: Store, digest: str) -> Account:
    doc = await store.users.find_one({"token_hash": digest})
    # The lookup is by hash, so timing reveals nothing about the token; compare anyway.
    if doc is not None and hmac.compare_digest(doc["token_hash"], digest):
        return Account.from_doc(doc)
    grant = await store.access_tokens.find_one({"_id": digest})
    if grant is not None and grant.get("user_id") is not None:
        doc = await store.users.find_one({"_id": grant["user_id"]})
        if doc is not None:
            return replace(Account.from_doc(doc), scopes=frozenset(grant.get("scopes", [])))
    raise Unauthorized("the bearer token is invalid", code="invalid_token")


class TokenCache:
    """`authenticate` remembered for TOKEN_CACHE_S per token in one API process (the lifespan
    makes one): within that time a token is answered without a round trip. Guarantees: an
    answer is never older than `ttl_s` counted from *before* its look-up was sent, so a token
    revoked or deleted anywhere is refused by every process within `ttl_s`; `forget` makes this
    process refuse it at once (the revocation endpoint calls it). Refusals are not remembered:
    a token that is unknown now may be valid a moment later on another process's write. The
    account is a snapshot: its identity and scopes never change, while counts that do
    (`friend_count`) are read fresh wherever they are shown."""

    def __init__(
        self, ttl_s: float = TOKEN_CACHE_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._accounts: dict[str, tuple[float, Account]] = {}

    async def authenticate(self, store: Store, token: str) -> Account:
        digest = hash_token(token)
        asked = self.clock()
        known = self._accounts.get(digest)
        if known is not None and asked - known[0] < self.ttl_s:
            return known[1]
        account = await _authenticate(store, digest)
        if len(self._accounts) >= MAX_CACHED_TOKENS:
            now = self.clock()
            self._accounts = {k: v for k, v in self._accounts.items() if now - v[0] < self.ttl_s}
            if len(self._accounts) >= MAX_CACHED_TOKENS:
                self._accounts.clear()
        self._accounts[digest] = (asked, account)
        return account

    def forget(self, token: str) -> None:
        """Refuse `token` from now on unless a fresh look-up finds it (after a revocation)."""
        self._accounts.pop(hash_token(token), None)


async def by_handle(store: Store, handle: str) -> Account:
    doc = await store.users.find_one({"handle": handle})
    if doc is None:
        raise user_not_found(handle)
    return Account.from_doc(doc)


async def by_login(store: Store, login: str) -> dict[str, Any] | None:
    """The `users` document signing in as `login`: an e-mail address (it has an `@`) or a
    handle, both compared lower-cased (as stored). None when there is none."""
    if "@" in login:
        return await store.users.find_one({"email": login.strip().lower()})
    return await store.users.find_one({"handle": login.strip().lower()})


def user_not_found(handle: str) -> NotFound:
    """The one 404 for a handle, whether the user is missing or not visible to the caller."""
    return NotFound(f"no user {handle[:MAX_ECHOED_HANDLE]!r}", code="user_not_found")


async def by_id(store: Store, user_id: ObjectId) -> Account | None:
    doc = await store.users.find_one({"_id": user_id})
    return None if doc is None else Account.from_doc(doc)


async def friend_count(store: Store, user_id: ObjectId) -> int:
    return int(await store.friendships.count_documents({"user_id": user_id}))


async def handles_by_id(store: Store, ids: list[ObjectId]) -> dict[ObjectId, Account]:
    return {d["_id"]: Account.from_doc(d) async for d in store.users.find({"_id": {"$in": ids}})}
