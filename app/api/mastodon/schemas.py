"""The response models of Mastodon's entities as served here (app.api.mastodon.entities builds
them), for the OpenAPI document and the endpoint table's validation of every reply."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountOut(_Entity):
    id: str
    username: str
    acct: str
    display_name: str
    locked: bool
    bot: bool
    group: bool
    discoverable: bool | None
    indexable: bool
    noindex: bool | None
    moved: None
    suspended: bool
    limited: bool
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    note: str
    url: str
    uri: str
    avatar: str
    avatar_static: str
    header: str
    header_static: str
    followers_count: int
    following_count: int
    statuses_count: int
    last_status_at: str | None
    emojis: list[dict[str, Any]]
    fields: list[dict[str, Any]]
    # Only in verify_credentials (the caller's own account): privacy and the like.
    source: dict[str, Any] | None = None


class StatusOut(_Entity):
    id: str
    uri: str
    url: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    edited_at: None
    account: AccountOut
    content: str
    visibility: str
    sensitive: bool
    spoiler_text: str
    media_attachments: list[dict[str, Any]]
    application: None
    mentions: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    emojis: list[dict[str, Any]]
    reblogs_count: int
    favourites_count: int
    replies_count: int
    in_reply_to_id: None
    in_reply_to_account_id: None
    reblog: None
    poll: None
    card: None
    language: str | None
    # The plain text: Mastodon sends it only in the answer to a delete (to redraft from).
    text: str | None
    favourited: bool
    reblogged: bool
    muted: bool
    bookmarked: bool
    pinned: bool
    filtered: list[dict[str, Any]]


class RelationshipOut(_Entity):
    id: str
    following: bool
    showing_reblogs: bool
    notifying: bool
    languages: list[str] | None
    followed_by: bool
    blocking: bool
    blocked_by: bool
    muting: bool
    muting_notifications: bool
    requested: bool
    requested_by: bool
    domain_blocking: bool
    endorsed: bool
    note: str


class AccountList(RootModel[list[AccountOut]]):
    pass


class StatusList(RootModel[list[StatusOut]]):
    pass


class RelationshipList(RootModel[list[RelationshipOut]]):
    pass


class SearchOut(_Entity):
    accounts: list[AccountOut]
    statuses: list[StatusOut]
    hashtags: list[dict[str, Any]]
