"""The endpoint table: one entry per endpoint, from which both the Starlette routes and the
OpenAPI document are built, so the document cannot miss an endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bson import ObjectId
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from app import cursors
from app.api import friends, health, markers, statuses, timeline, users
from app.api import schemas as s
from app.api.parsing import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    description: str
    schema: dict[str, object] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: bool
    ok: int
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()


# Path and query parameters are described as precisely as the parsers check them, so that a
# schema-valid value is accepted and a schema-invalid one is refused (the fuzzing test holds
# the API to both).
HANDLE = Param(
    "handle",
    "path",
    "a user's handle",
    {"type": "string", "pattern": s.HANDLE_PATTERN, "example": "alice"},
    required=True,
)
STATUS_ID = Param(
    "id",
    "path",
    "a status id (24 hex digits); any other string is simply not found",
    {"type": "string", "example": "000000000000000000000000"},
    required=True,
)
LIMIT = Param(
    "limit",
    "query",
    f"page size, 1–{MAX_LIMIT} (default {DEFAULT_LIMIT})",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)


def _cursor(name: str, description: str) -> Param:
    # Cursors are opaque: a string of the documented shape can still be refused (400
    # invalid_cursor) if it was not issued by this service.
    return Param(
        name,
        "query",
        f"{description}; opaque, as returned by an earlier page",
        {
            "type": "string",
            "pattern": CURSOR_PATTERN,
            "example": cursors.encode(ObjectId("000000000000000000000000")),
        },
    )


CURSOR = _cursor("cursor", "next_cursor of the previous page")
BEFORE = _cursor("before", "a cursor: return older items")
AFTER = _cursor(
    "after", "a cursor (newest_cursor): return only newer items; not together with before"
)
IDEMPOTENCY = Param(
    "Idempotency-Key",
    "header",
    "retry-safe key, 1–255 characters; kept for 24 hours",
    {"type": "string", "minLength": 1, "maxLength": s.MAX_IDEMPOTENCY_KEY_CHARS},
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/users",
        users.create_user,
        "Create a user; returns its token once",
        False,
        201,
        s.CreatedUserOut,
        s.CreateUser,
        errors=(400, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/users/{handle}",
        users.get_user,
        "A user's public profile",
        False,
        200,
        s.UserOut,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint("GET", "/me", users.me, "The caller's profile", True, 200, s.UserOut),
    Endpoint(
        "POST",
        "/friend-requests",
        friends.send_request,
        "Ask someone to be friends (accepts a crossing request)",
        True,
        201,
        s.FriendRequestOut,
        s.CreateFriendRequest,
        errors=(400, 404, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/friend-requests",
        friends.list_requests,
        "Pending requests both ways",
        True,
        200,
        s.FriendRequestsOut,
    ),
    Endpoint(
        "POST",
        "/friend-requests/{handle}/accept",
        friends.accept_request,
        "Accept the pending request from handle",
        True,
        200,
        s.AcceptedOut,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/friend-requests/{handle}",
        friends.delete_request,
        "Decline an incoming or cancel an outgoing request",
        True,
        204,
        None,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/friends",
        friends.list_friends,
        "The caller's friends, newest first",
        True,
        200,
        s.FriendPage,
        params=(LIMIT, CURSOR),
        errors=(400,),
    ),
    Endpoint(
        "DELETE",
        "/friends/{handle}",
        friends.unfriend,
        "End a friendship (idempotent)",
        True,
        204,
        None,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/statuses",
        statuses.post_status,
        "Post a status",
        True,
        201,
        s.StatusOut,
        s.CreateStatus,
        params=(IDEMPOTENCY,),
        errors=(400, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/statuses/{id}",
        statuses.get_status,
        "A status, if the caller is its author or the author's friend",
        True,
        200,
        s.StatusOut,
        params=(STATUS_ID,),
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/statuses/{id}",
        statuses.delete_status,
        "Delete one's own status",
        True,
        204,
        None,
        params=(STATUS_ID,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/users/{handle}/statuses",
        statuses.user_statuses,
        "A user's statuses (the user or a friend only)",
        True,
        200,
        s.StatusPage,
        params=(HANDLE, LIMIT, BEFORE),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/timeline",
        timeline.timeline,
        "The caller's home timeline",
        True,
        200,
        s.TimelinePage,
        params=(LIMIT, BEFORE, AFTER),
        errors=(400,),
    ),
    Endpoint(
        "GET",
        "/timeline/unread_count",
        markers.unread_count,
        "How many timeline items are newer than the home marker (at most TIMELINE_MAX)",
        True,
        200,
        s.UnreadCountOut,
    ),
    Endpoint(
        "GET",
        "/markers",
        markers.get_markers,
        "The caller's read markers (home is null before the first POST)",
        True,
        200,
        s.MarkersOut,
    ),
    Endpoint(
        "POST",
        "/markers",
        markers.post_markers,
        "Move the home marker forward (an older id changes nothing; a stale version is a 409)",
        True,
        200,
        s.MarkersOut,
        s.UpdateMarkers,
        errors=(400, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/health",
        health.health,
        "Database reachability and worker backlog",
        False,
        200,
        s.HealthOut,
    ),
)
