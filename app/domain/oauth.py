"""Client applications, access tokens and password sign-in for the Mastodon client API
(app/api/mastodon/). Tokens are minted as the service's own are (32 random bytes, only their
sha256 stored) and `app.domain.users.authenticate` accepts both kinds on every endpoint.

Errors carry OAuth 2's error codes (RFC 6749 §5.2), which Mastodon's clients read; the HTTP
statuses are mapped where the API is (app/api/mastodon/errors.py).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from app.domain import passwords
from app.domain.errors import Conflict, DomainError, Forbidden, Unauthorized
from app.domain.users import TOKEN_BYTES, Account, by_login, create_user, hash_token
from app.storage.models import utcnow
from app.storage.store import Store

# Mastodon's scopes: the four of old and `profile`, and the granular ones under read/write.
TOP_SCOPES = ("read", "write", "follow", "push", "profile")
READ_KINDS = (
    "accounts", "blocks", "bookmarks", "favourites", "filters", "follows", "lists", "mutes",
    "notifications", "search", "statuses",
)  # fmt: skip
WRITE_KINDS = (
    "accounts", "blocks", "bookmarks", "conversations", "favourites", "filters", "follows",
    "lists", "media", "mutes", "notifications", "reports", "statuses",
)  # fmt: skip
KNOWN_SCOPES = frozenset(
    [*TOP_SCOPES, *(f"read:{k}" for k in READ_KINDS), *(f"write:{k}" for k in WRITE_KINDS)]
)
# The legacy `follow` scope grants these (Mastodon's own table).
FOLLOW_GRANTS = frozenset(
    ["read:blocks", "read:follows", "read:mutes", "write:blocks", "write:follows", "write:mutes"]
)
# Mastodon's default when an application or a token request names none.
DEFAULT_SCOPES = ("read",)
# Bounds on what an application registers: enough for any client, and a bound on the document.
MAX_APP_NAME_CHARS = 100
MAX_URI_CHARS = 2000
MAX_REDIRECT_URIS = 10
MAX_SCOPES_CHARS = 1000
# A plausible e-mail address: something, one @, a dotless-or-dotted domain; 254 is RFC 5321's
# limit on a path. Deliverability is not checked (no e-mail is ever sent).
MAX_EMAIL_CHARS = 254


class OAuthError(DomainError):
    """An OAuth 2 error: `code` is the RFC 6749 error string."""


class InvalidClient(OAuthError):
    code = "invalid_client"


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class InvalidScope(OAuthError):
    code = "invalid_scope"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


def parse_scopes(text: str | None) -> tuple[str, ...]:
    """Space-separated scopes (repeats dropped, order kept); none given means DEFAULT_SCOPES.
    An unknown scope is InvalidScope."""
    if text is None or not text.strip():
        return DEFAULT_SCOPES
    if len(text) > MAX_SCOPES_CHARS:
        raise InvalidScope("too many scopes")
    out: list[str] = []
    for scope in text.split():
        if scope not in KNOWN_SCOPES:
            raise InvalidScope(f"unknown scope {scope[:40]!r}")
        if scope not in out:
            out.append(scope)
    return tuple(out)


def allows(granted: Iterable[str], needed: str) -> bool:
    """Whether scopes `granted` include `needed` (`read` includes `read:statuses`, `follow`
    the FOLLOW_GRANTS)."""
    have = set(granted)
    top = needed.split(":", 1)[0]
    return needed in have or top in have or ("follow" in have and needed in FOLLOW_GRANTS)


# What a Mastodon API token needs on the native API, whose endpoints predate scopes: `read` to
# read, `write` to change anything (granular scopes alone are not enough there).
NATIVE_READ = "read"
NATIVE_WRITE = "write"


def require_native_scope(me: Account, method: str) -> None:
    """Forbidden unless the caller's token may use a native endpoint of this HTTP method."""
    if me.scopes is None:
        return
    needed = NATIVE_READ if method in ("GET", "HEAD") else NATIVE_WRITE
    if needed not in me.scopes:
        raise Forbidden(f"this token lacks the {needed!r} scope")


def require_scope(me: Account, needed: str) -> None:
    """Forbidden unless the caller's token allows `needed` (the account's own token allows all)."""
    if me.scopes is not None and not allows(me.scopes, needed):
        raise Forbidden("This action is outside the authorized scopes")


@dataclass(frozen=True)
class Grant:
    """A minted access token (shown once) and what it allows."""

    token: str
    scopes: tuple[str, ...]
    created_at: datetime


async def create_app(
    store: Store, name: str, redirect_uris: list[str], scopes: tuple[str, ...], website: str | None
) -> tuple[dict[str, Any], str]:
    """Register a client application. Returns (its document, its secret, shown once)."""
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    doc = {
        "_id": ObjectId(),
        "client_id": secrets.token_urlsafe(TOKEN_BYTES),
        "client_secret_hash": hash_token(secret),
        "name": name,
        "website": website,
        "redirect_uris": redirect_uris,
        "scopes": list(scopes),
        "created_at": utcnow(),
    }
    await store.oauth_apps.insert_one(doc)
    return doc, secret


async def authenticate_client(
    store: Store, client_id: str | None, client_secret: str | None
) -> dict[str, Any]:
    """The application with this id and secret, else InvalidClient."""
    if not client_id or not client_secret:
        raise InvalidClient("client_id and client_secret are required")
    doc = await store.oauth_apps.find_one({"client_id": client_id})
    if doc is None or not hmac.compare_digest(doc["client_secret_hash"], hash_token(client_secret)):
        raise InvalidClient(
            "Client authentication failed due to unknown client, no client authentication "
            "included, or unsupported authentication method."
        )
    return dict(doc)


def grantable(app: dict[str, Any], requested: tuple[str, ...]) -> tuple[str, ...]:
    """`requested`, if the application registered every one of them (directly or through a
    broader scope it has), else InvalidScope."""
    registered = app.get("scopes") or list(DEFAULT_SCOPES)
    refused = [s for s in requested if not allows(registered, s)]
    if refused:
        raise InvalidScope(
            "The requested scope is invalid, unknown, or malformed: "
            f"{' '.join(refused)[:100]} was not registered by the application"
        )
    return requested


async def mint(
    store: Store, app: dict[str, Any], scopes: tuple[str, ...], user_id: ObjectId | None
) -> Grant:
    """A new access token for `user_id` (None: the application's own token)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    await store.access_tokens.insert_one(
        {
            "_id": hash_token(token),
            "app_id": app["_id"],
            "user_id": user_id,
            "scopes": list(scopes),
            "created_at": now,
        }
    )
    return Grant(token, scopes, now)


async def app_grant(store: Store, token: str) -> dict[str, Any]:
    """The access token document of `token`, whoever it belongs to; Unauthorized if none."""
    doc = await store.access_tokens.find_one({"_id": hash_token(token)})
    if doc is None:
        raise Unauthorized("The access token is invalid", code="invalid_token")
    return dict(doc)


async def revoke(store: Store, app: dict[str, Any], token: str) -> None:
    """Revoke `token` if `app` minted it; anything else is left alone, answered the same
    (RFC 7009: the answer does not tell whether the token existed)."""
    await store.access_tokens.delete_one({"_id": hash_token(token), "app_id": app["_id"]})


async def check_password(store: Store, login: str, password: str) -> Account | None:
    """The account `login` (handle or e-mail) names, if `password` is its password. The KDF runs
    whether or not the account exists or has a password, so timing does not tell."""
    doc = await by_login(store, login)
    stored = None if doc is None else doc.get("password_hash")
    if not await passwords.verify_password(password, stored) or doc is None:
        return None
    return Account.from_doc(doc)


async def register(
    store: Store,
    app: dict[str, Any],
    scopes: tuple[str, ...],
    handle: str,
    email: str,
    password: str,
) -> tuple[Account, Grant]:
    """A new account with an e-mail and a password, and an access token for it with `scopes`.
    Conflict `handle_taken` / `email_taken` when either is in use."""
    email = email.strip().lower()
    if await store.users.find_one({"email": email}, {"_id": 1}) is not None:
        raise Conflict("the e-mail address is taken", code="email_taken")
    digest = await passwords.hash_password(password)
    # The account's own token is not handed out here: the client gets an access token with
    # the scopes it asked for, revocable through /oauth/revoke.
    user, _ = await create_user(store, handle, None, email=email, password_hash=digest)
    return user, await mint(store, app, scopes, user.id)


def valid_email(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return (
        bool(at and local and domain)
        and len(email) <= MAX_EMAIL_CHARS
        and not any(c.isspace() for c in email)
        and "@" not in domain
        and not domain.startswith(".")
        and not domain.endswith(".")
    )
