"""The endpoint table: one entry per endpoint, from which both the Starlette routes and the
OpenAPI document are built, so the document cannot miss an endpoint (app.api.endpoint: the row
authenticates and serialises, so it cannot misstate one either)."""

from __future__ import annotations

from bson import ObjectId

from app import cursors
from app.api import friends, health, markers, statuses, timeline, users
from app.api import schemas as s
from app.api.endpoint import Endpoint, Param
from app.api.parsing import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT

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
        summary="Create a user; returns its token once",
        auth=False,
        ok=201,
        response=s.CreatedUserOut,
        body=s.CreateUser,
        errors=(400, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/users/{handle}",
        users.get_user,
        summary="A user's public profile",
        auth=False,
        ok=200,
        response=s.UserOut,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/me",
        users.me,
        summary="The caller's profile",
        auth=True,
        ok=200,
        response=s.UserOut,
    ),
    Endpoint(
        "POST",
        "/friend-requests",
        friends.send_request,
        summary="Ask someone to be friends (accepts a crossing request)",
        auth=True,
        ok=201,
        response=s.FriendRequestOut,
        body=s.CreateFriendRequest,
        errors=(400, 404, 409, 413, 415, 422),
        also_ok={200: "already friends, or a crossing request was accepted"},
    ),
    Endpoint(
        "GET",
        "/friend-requests",
        friends.list_requests,
        summary="Pending requests both ways",
        auth=True,
        ok=200,
        response=s.FriendRequestsOut,
    ),
    Endpoint(
        "POST",
        "/friend-requests/{handle}/accept",
        friends.accept_request,
        summary="Accept the pending request from handle",
        auth=True,
        ok=200,
        response=s.AcceptedOut,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/friend-requests/{handle}",
        friends.delete_request,
        summary="Decline an incoming or cancel an outgoing request",
        auth=True,
        ok=204,
        response=None,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/friends",
        friends.list_friends,
        summary="The caller's friends, newest first",
        auth=True,
        ok=200,
        response=s.FriendPage,
        params=(LIMIT, CURSOR),
        errors=(400,),
    ),
    Endpoint(
        "DELETE",
        "/friends/{handle}",
        friends.unfriend,
        summary="End a friendship (idempotent)",
        auth=True,
        ok=204,
        response=None,
        params=(HANDLE,),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/statuses",
        statuses.post_status,
        summary="Post a status",
        auth=True,
        ok=201,
        response=s.StatusOut,
        body=s.CreateStatus,
        params=(IDEMPOTENCY,),
        errors=(400, 409, 413, 415, 422),
        also_ok={200: "a replay of an earlier request with the same Idempotency-Key"},
    ),
    Endpoint(
        "GET",
        "/statuses/{id}",
        statuses.get_status,
        summary="A status, if the caller is its author or the author's friend",
        auth=True,
        ok=200,
        response=s.StatusOut,
        params=(STATUS_ID,),
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/statuses/{id}",
        statuses.delete_status,
        summary="Delete one's own status",
        auth=True,
        ok=204,
        response=None,
        params=(STATUS_ID,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/users/{handle}/statuses",
        statuses.user_statuses,
        summary="A user's statuses (the user or a friend only)",
        auth=True,
        ok=200,
        response=s.StatusPage,
        params=(HANDLE, LIMIT, BEFORE),
        errors=(400, 404),
    ),
    Endpoint(
        "GET",
        "/timeline",
        timeline.timeline,
        summary="The caller's home timeline",
        auth=True,
        ok=200,
        response=s.TimelinePage,
        params=(LIMIT, BEFORE, AFTER),
        errors=(400,),
    ),
    Endpoint(
        "GET",
        "/timeline/unread_count",
        markers.unread_count,
        summary="How many timeline items are newer than the home marker (at most TIMELINE_MAX)",
        auth=True,
        ok=200,
        response=s.UnreadCountOut,
    ),
    Endpoint(
        "GET",
        "/markers",
        markers.get_markers,
        summary="The caller's read markers (home is null before the first POST)",
        auth=True,
        ok=200,
        response=s.MarkersOut,
    ),
    Endpoint(
        "POST",
        "/markers",
        markers.post_markers,
        summary=(
            "Move the home marker forward (an older id changes nothing; a stale version is a 409)"
        ),
        auth=True,
        ok=200,
        response=s.MarkersOut,
        body=s.UpdateMarkers,
        errors=(400, 409, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/health",
        health.health,
        summary="Database reachability and worker backlog",
        auth=False,
        ok=200,
        response=s.HealthOut,
    ),
)
