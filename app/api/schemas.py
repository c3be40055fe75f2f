"""Request and response bodies. Requests are validated strictly (no coercion: `{"$gt": ""}` is
not a string, `1` is not a handle); responses are documented in the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HANDLE_PATTERN = r"^[a-z0-9_]{3,30}$"
# Status text limit, in characters (the contract's 1–5000).
MAX_TEXT_CHARS = 5000
MAX_DISPLAY_NAME_CHARS = 100
MAX_IDEMPOTENCY_KEY_CHARS = 255


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateUser(_Strict):
    handle: str = Field(pattern=HANDLE_PATTERN, description="3–30 of [a-z0-9_]")
    display_name: str | None = Field(default=None, max_length=MAX_DISPLAY_NAME_CHARS)


class CreateFriendRequest(_Strict):
    to: str = Field(pattern=HANDLE_PATTERN)


class CreateStatus(_Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(_Out):
    id: str
    handle: str
    display_name: str | None
    friend_count: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class CreatedUserOut(_Out):
    id: str
    handle: str
    display_name: str | None
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    token: str


class StatusOut(_Out):
    id: str
    author: str
    text: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class StatusPage(_Out):
    items: list[StatusOut]
    next_cursor: str | None


class TimelinePage(_Out):
    items: list[StatusOut]
    next_cursor: str | None
    newest_cursor: str | None
    gap: bool


class FriendRequestOut(_Out):
    from_: str = Field(alias="from")
    to: str
    status: Literal["pending", "accepted"]


class IncomingRequest(_Out):
    from_: str = Field(alias="from")
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class OutgoingRequest(_Out):
    to: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class FriendRequestsOut(_Out):
    incoming: list[IncomingRequest]
    outgoing: list[OutgoingRequest]


class AcceptedOut(_Out):
    status: Literal["accepted"]


class FriendOut(_Out):
    handle: str
    display_name: str | None
    since: str = Field(json_schema_extra={"format": "date-time"})


class FriendPage(_Out):
    items: list[FriendOut]
    next_cursor: str | None


class HealthOut(_Out):
    status: Literal["ok"]
    strategy: str
    database: Literal["embedded", "mongodb"]
    pending_events: int
    oldest_pending_age_s: float | None
    dead_events: int


class ErrorBody(_Out):
    code: str
    message: str


class ErrorOut(_Out):
    error: ErrorBody
