"""The Mastodon client API's credentials (app/api/mastodon/): registered client applications,
the access tokens minted for them, and failed-login counters. app.storage.models lists them with the
rest in DOCUMENT_MODELS."""

from __future__ import annotations

from datetime import UTC, datetime

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, IndexModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class OAuthApp(Document):
    """A client application (`POST /api/v1/apps`). Only the sha256 of its secret is stored, as
    for tokens: the secret is a random 32 bytes, so a fast hash is enough."""

    client_id: str
    client_secret_hash: str
    name: str
    website: str | None = None
    redirect_uris: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "oauth_apps"
        indexes = [IndexModel([("client_id", ASCENDING)], unique=True)]


class AccessToken(Document):
    """A token minted by `POST /oauth/token` or at registration. `_id` is the token's sha256
    (the token itself is never stored), so a request's look-up is the `_id` index. `user_id`
    is None for an application's own token (the client_credentials grant), which can register
    accounts and nothing else."""

    id: str  # type: ignore[assignment]
    app_id: PydanticObjectId
    user_id: PydanticObjectId | None = None
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "access_tokens"
        indexes = [
            # A user's tokens (an account's sign-out everywhere, an operator's look-up).
            IndexModel([("user_id", ASCENDING)]),
        ]
