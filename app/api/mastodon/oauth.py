"""`POST /api/v1/apps`, `POST /oauth/token`, `POST /oauth/revoke` and registration
(`POST /api/v1/accounts`): the handlers over app.domain.oauth."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from app.api.deps import MAX_TOKEN_CHARS, context, tokens
from app.api.endpoint import Payload
from app.api.mastodon.errors import RegistrationFailed
from app.api.mastodon.login_limit import guarded_login
from app.api.mastodon.params import body
from app.api.schemas import HANDLE_PATTERN
from app.api.throttle import request_address
from app.domain import oauth
from app.domain.errors import Conflict, Forbidden, Unauthorized, ValidationFailed
from app.domain.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from app.domain.users import Account

OOB = "urn:ietf:wg:oauth:2.0:oob"
# Free-text fields a client sends and nobody reads here (locale, reason): bounded all the same.
MAX_NOTE_CHARS = 1000
_HANDLE = HANDLE_PATTERN.strip("^$")
CLIENT_ID = Field(default=None, max_length=MAX_TOKEN_CHARS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateApp(_Body):
    client_name: str = Field(min_length=1, max_length=oauth.MAX_APP_NAME_CHARS)
    redirect_uris: str | list[str] = Field(
        description="one URI per line, or a list; urn:ietf:wg:oauth:2.0:oob for none"
    )
    scopes: str | None = Field(default=None, max_length=oauth.MAX_SCOPES_CHARS)
    website: str | None = Field(default=None, max_length=oauth.MAX_URI_CHARS)


class AppOut(_Body):
    id: str
    name: str
    website: str | None
    scopes: list[str]
    redirect_uri: str
    redirect_uris: list[str]
    client_id: str
    client_secret: str
    client_secret_expires_at: int


class TokenRequest(_Body):
    grant_type: str = Field(max_length=100, description="password or client_credentials")
    client_id: str | None = CLIENT_ID
    client_secret: str | None = CLIENT_ID
    scope: str | None = Field(default=None, max_length=oauth.MAX_SCOPES_CHARS)
    username: str | None = Field(default=None, max_length=oauth.MAX_EMAIL_CHARS)
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_CHARS)
    redirect_uri: str | None = Field(default=None, max_length=oauth.MAX_URI_CHARS)
    # The authorization_code and refresh_token grants' fields: read only to refuse the grant
    # with OAuth's unsupported_grant_type rather than a validation error.
    code: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS)
    refresh_token: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS)


class TokenOut(_Body):
    access_token: str
    token_type: str
    scope: str
    created_at: int


class RevokeRequest(_Body):
    client_id: str | None = CLIENT_ID
    client_secret: str | None = CLIENT_ID
    token: str = Field(max_length=MAX_TOKEN_CHARS)


class EmptyOut(_Body):
    pass


class Register(_Body):
    username: str = Field(max_length=100)
    email: str = Field(max_length=oauth.MAX_EMAIL_CHARS + 1)
    password: str = Field(max_length=MAX_PASSWORD_CHARS + 1)
    agreement: bool = False
    locale: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    reason: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    date_of_birth: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    # Mastodon.py sends these along; they are not needed (the bearer token names the app).
    client_id: str | None = CLIENT_ID
    client_secret: str | None = CLIENT_ID
    return_detailed_error: bool | None = None


def _uris(value: str | list[str]) -> list[str]:
    uris = value.split() if isinstance(value, str) else [u.strip() for u in value]
    uris = [u for u in uris if u]
    if not uris or len(uris) > oauth.MAX_REDIRECT_URIS:
        raise ValidationFailed(f"redirect_uris: give 1 to {oauth.MAX_REDIRECT_URIS} URIs")
    if any(len(u) > oauth.MAX_URI_CHARS or (u != OOB and ":" not in u) for u in uris):
        raise ValidationFailed("redirect_uris: each must be an absolute URI")
    return uris


async def create_app(request: Request) -> Payload:
    data = await body(request, CreateApp)
    scopes = oauth.parse_scopes(data.scopes)
    uris = _uris(data.redirect_uris)
    doc, secret = await oauth.create_app(
        context(request).store, data.client_name, uris, scopes, data.website
    )
    return {
        "id": str(doc["_id"]),
        "name": doc["name"],
        "website": doc["website"],
        "scopes": list(scopes),
        "redirect_uri": "\n".join(uris),
        "redirect_uris": uris,
        "client_id": doc["client_id"],
        "client_secret": secret,
        "client_secret_expires_at": 0,
    }


def token_json(grant: oauth.Grant) -> Payload:
    return {
        "access_token": grant.token,
        "token_type": "Bearer",
        "scope": " ".join(grant.scopes),
        "created_at": int(grant.created_at.timestamp()),
    }


async def token(request: Request) -> Payload:
    data = await body(request, TokenRequest)
    store = context(request).store
    if data.grant_type not in ("password", "client_credentials"):
        raise oauth.UnsupportedGrantType(
            "only the password and client_credentials grants are supported"
        )
    app = await oauth.authenticate_client(store, data.client_id, data.client_secret)
    scopes = oauth.grantable(app, oauth.parse_scopes(data.scope))
    if data.grant_type == "client_credentials":
        return token_json(await oauth.mint(store, app, scopes, None))
    if not data.username or data.password is None:
        raise oauth.InvalidGrant("username and password are required")
    login, password = data.username, data.password
    # The address the rate limits key on: the socket peer, or TRUSTED_PROXY_HOPS' entry of
    # X-Forwarded-For behind a proxy (app.api.throttle).
    address = request_address(request, context(request).settings.trusted_proxy_hops)

    async def attempt() -> Account | None:
        return await oauth.check_password(store, login, password)

    user = await guarded_login(context(request), login, address, attempt)
    return token_json(await oauth.mint(store, app, scopes, user.id))


async def revoke(request: Request) -> Payload:
    data = await body(request, RevokeRequest)
    store = context(request).store
    try:
        app = await oauth.authenticate_client(store, data.client_id, data.client_secret)
    except oauth.InvalidClient:
        # RFC 7009 and Doorkeeper: an unauthenticated revocation is refused as not allowed.
        raise Forbidden("You are not authorized to revoke this token") from None
    await oauth.revoke(store, app, data.token)
    tokens(request).forget(data.token)  # other processes refuse it within TOKEN_CACHE_S
    return {}


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_TOKEN_CHARS:
        raise Unauthorized("The access token is invalid", code="invalid_token")
    return value


async def register(request: Request) -> Payload:
    """Registration with an application's token (client_credentials) that has write:accounts;
    the account can sign in at once (no e-mail is sent, so none is confirmed)."""
    store = context(request).store
    grant = await oauth.app_grant(store, _bearer(request))
    if not oauth.allows(grant.get("scopes", []), "write:accounts"):
        raise Forbidden("This action is outside the authorized scopes")
    data = await body(request, Register)
    _check_registration(data)
    app = await store.oauth_apps.find_one({"_id": grant["app_id"]})
    if app is None:
        raise Unauthorized("The access token is invalid", code="invalid_token")
    try:
        _, minted = await oauth.register(
            store, app, tuple(grant.get("scopes", [])), data.username, data.email, data.password
        )
    except Conflict as exc:
        field = "email" if exc.code == "email_taken" else "username"
        raise RegistrationFailed(field, "ERR_TAKEN", "is already taken") from None
    return token_json(minted)


def _check_registration(data: Register) -> None:
    if not re.fullmatch(_HANDLE, data.username):
        raise RegistrationFailed(
            "username", "ERR_INVALID", "must be 3–30 of lower-case letters, digits and _"
        )
    if not oauth.valid_email(data.email):
        raise RegistrationFailed("email", "ERR_INVALID", "is not an e-mail address")
    if len(data.password) < MIN_PASSWORD_CHARS:
        raise RegistrationFailed(
            "password", "ERR_TOO_SHORT", f"is too short (minimum is {MIN_PASSWORD_CHARS})"
        )
    if len(data.password) > MAX_PASSWORD_CHARS:
        raise RegistrationFailed(
            "password", "ERR_TOO_LONG", f"is too long (maximum is {MAX_PASSWORD_CHARS})"
        )
    if not data.agreement:
        raise RegistrationFailed("agreement", "ERR_ACCEPTED", "must be accepted")
