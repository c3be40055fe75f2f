"""Request and response bodies. Requests are validated strictly (no coercion: `{"$gt": ""}` is
not a string, `1` is not a handle); responses are documented in the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

HANDLE_PATTERN = r"^[a-z0-9_]{3,30}$"
# Status text limit, in characters (the contract's 1–5000).
MAX_TEXT_CHARS = 5000
MAX_DISPLAY_NAME_CHARS = 100
# Idempotency-Key length (the contract's 1–255): room for a UUID or a hash with a prefix, and a
# bound on what each key costs in idempotency_keys and its unique index.
MAX_IDEMPOTENCY_KEY_CHARS = 255
# A status id as the API prints it: an ObjectId's 24 hex digits.
STATUS_ID_PATTERN = r"^[0-9a-fA-F]{24}$"
# Marker versions are counters starting at 1 (0: no marker yet); a BSON int64 holds any of them.
MAX_MARKER_VERSION = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateUser(_Strict):
    handle: str = Field(pattern=HANDLE_PATTERN, description="3–30 of [a-z0-9_]")
    display_name: str | None = Field(default=None, max_length=MAX_DISPLAY_NAME_CHARS)


class CreateFriendRequest(_Strict):
    to: str = Field(pattern=HANDLE_PATTERN)


class CreateStatus(_Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class HomeMarkerIn(_Strict):
    last_read_id: str = Field(pattern=STATUS_ID_PATTERN, description="a status id")
    version: int | None = Field(
        default=None,
        ge=0,
        le=MAX_MARKER_VERSION,
        description="the version last read; a different stored version is a 409 (0: none yet)",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _integral_number(cls, value: object) -> object:
        # JSON has one number type and JSON Schema's "integer" admits 3.0, so an integral float
        # is that integer; 3.5 (or a bool, or a string) still fails strict validation.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class UpdateMarkers(_Strict):
    home: HomeMarkerIn


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


class BacklogAuthorOut(_Out):
    author: str
    pending: int


class HealthOut(_Out):
    status: Literal["ok"]
    strategy: str
    database: Literal["embedded", "mongodb"]
    pending_events: int
    oldest_pending_age_s: float | None
    dead_events: int
    # users whose last timeline read is older than TIMELINE_ACTIVE_DAYS (no fan-out for them)
    inactive_users: int
    # the authors with the most events waiting, most first (app.pipeline.queued.BACKLOG_TOP_AUTHORS)
    backlog_authors: list[BacklogAuthorOut]


class HomeMarkerOut(_Out):
    last_read_id: str
    version: int
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class MarkersOut(_Out):
    home: HomeMarkerOut | None


class UnreadCountOut(_Out):
    count: int
    capped: bool


class ErrorBody(_Out):
    code: str
    message: str


class ErrorOut(_Out):
    error: ErrorBody
