"""The Mastodon table's path and query parameters, described as precisely as the handlers read
them (app.api.mastodon.params), so the fuzzing holds the API to both sides of each."""

from __future__ import annotations

from app.api.endpoint import Param
from app.api.mastodon.accounts import MAX_RELATIONSHIP_IDS, SEARCH_TYPES
from app.api.mastodon.params import DEFAULT_LIMIT, ID_PATTERN, MAX_LIMIT

_ID: dict[str, object] = {
    "type": "string",
    "pattern": ID_PATTERN,
    "example": "000000000000000000000000",
}
ACCOUNT_ID = Param("id", "path", "an account id (24 hex digits)", _ID, required=True)
STATUS_ID = Param(
    "id",
    "path",
    "a status id; any other string is simply not found",
    {"type": "string", "example": "000000000000000000000000"},
    required=True,
)
LIMIT = Param(
    "limit",
    "query",
    f"page size, default {DEFAULT_LIMIT}; above {MAX_LIMIT} is served as {MAX_LIMIT}",
    {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT},
)


def _status_id(name: str, description: str) -> Param:
    return Param(name, "query", description, _ID)


MAX_ID = _status_id("max_id", "older than this status")
SINCE_ID = _status_id("since_id", "the newest statuses above this one (a gap is possible)")
MIN_ID = _status_id("min_id", "the statuses just above this one (no gap); wins over since_id")
_FLAG: dict[str, object] = {"type": "boolean"}
LOCAL = Param("local", "query", "local statuses only (all are)", _FLAG)
REMOTE = Param("remote", "query", "remote statuses only (none are: an empty page)", _FLAG)
ONLY_MEDIA = Param("only_media", "query", "statuses with media only (none: an empty page)", _FLAG)
ACCT = Param(
    "acct",
    "query",
    "a local username (`alice` or `@alice`)",
    {"type": "string", "minLength": 1},
    required=True,
)
QUERY = Param("q", "query", "a username, matched exactly", required=True)
SEARCH_TYPE = Param(
    "type",
    "query",
    "accounts, statuses or hashtags (only accounts are ever found)",
    {"type": "string", "enum": list(SEARCH_TYPES)},
)
IDS = Param(
    "id[]",
    "query",
    f"account ids (up to {MAX_RELATIONSHIP_IDS}); unknown ones are left out",
    {"type": "array", "items": {"type": "string"}, "maxItems": MAX_RELATIONSHIP_IDS},
)
TIMELINE = Param(
    "timeline[]",
    "query",
    "the markers wanted (only home exists)",
    {"type": "array", "items": {"type": "string"}},
)
