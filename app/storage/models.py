"""Beanie documents: the source of truth (users, friendships, statuses), the derived data of the
strategies (timeline entries, audience watermarks) and the machinery (events, idempotency keys).

The hot paths read and write through the raw PyMongo collections of these models, bound once
per database in an app.storage.store.Store (bulk writes and projected reads), never through Beanie's
class binding; the documents remain the single place where collection names, fields and
indexes are declared.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.storage.models_copies import HybridEntry as HybridEntry
from app.storage.models_copies import HybridMeta as HybridMeta
from app.storage.models_copies import TimelineEntry as TimelineEntry
from app.storage.models_copies import TimelineMeta as TimelineMeta
from app.storage.models_hybrid import LargeAuthor as LargeAuthor
from app.storage.models_hybrid import LargeFriend as LargeFriend
from app.storage.models_oauth import AccessToken as AccessToken
from app.storage.models_oauth import OAuthApp as OAuthApp

# Idempotency keys are kept this long; a retry after that creates a new status.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# Applied events are kept this long for inspection. Both are removed by the workers' housekeeping
# (fanout.housekeeping), not by TTL indexes: the embedded server's TTL monitor scans every kept
# document under its storage lock (docs/operations.md, "Expiry").
DONE_EVENT_TTL_SECONDS = 3600


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(Document):
    handle: str
    display_name: str | None = None
    # sha256 of the bearer token; the token itself is never stored.
    token_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    # Friendships counted against MAX_FRIENDS (app.domain.graph.reserve). Without transactions a
    # crash
    # can leave it above the number of edges, never below; the profile counts the edges.
    friend_count: int = 0
    # Set by the Mastodon API's registration (POST /api/v1/accounts); absent on accounts made by
    # POST /users, which sign in with their token only. The e-mail is stored lower-cased.
    email: str | None = None
    # app.domain.passwords' `scrypt$N$r$p$salt$key`; never the password.
    password_hash: str | None = None

    class Settings:
        name = "users"
        keep_nulls = False
        indexes = [
            IndexModel([("handle", ASCENDING)], unique=True),
            IndexModel([("token_hash", ASCENDING)], unique=True),
            # Sign-in by e-mail; only accounts that have one are in it.
            IndexModel(
                [("email", ASCENDING)],
                unique=True,
                partialFilterExpression={"email": {"$exists": True}},
            ),
        ]


class FriendRequest(Document):
    from_id: PydanticObjectId
    to_id: PydanticObjectId
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "friend_requests"
        indexes = [
            IndexModel([("from_id", ASCENDING), ("to_id", ASCENDING)], unique=True),
            IndexModel([("to_id", ASCENDING), ("created_at", DESCENDING)]),
        ]


class Friendship(Document):
    """One directed edge; a friendship is the pair of edges, written together."""

    user_id: PydanticObjectId
    friend_id: PydanticObjectId
    since: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "friendships"
        indexes = [
            IndexModel([("user_id", ASCENDING), ("friend_id", ASCENDING)], unique=True),
            # GET /friends pages by edge id, newest friendship first.
            IndexModel([("user_id", ASCENDING), ("_id", DESCENDING)]),
        ]


class Status(Document):
    """A status, stored once. `audience` is present only under recipients_embedded."""

    author_id: PydanticObjectId
    author: str  # the author's handle, denormalized: handles never change
    text: str
    created_at: datetime = Field(default_factory=utcnow)
    audience: list[PydanticObjectId] | None = None

    class Settings:
        name = "statuses"
        keep_nulls = False
        indexes = [
            # fanout_on_read's page query and every "an author's newest statuses" query.
            IndexModel([("author_id", ASCENDING), ("_id", DESCENDING)]),
        ]


# Names of inbox_buckets' indexes that the loose-entries migration creates (and its backward
# step drops): fixed so the migration and the model agree.
INBOX_CHAIN_INDEX = "owner_id_1_hi_1_s_1"
INBOX_FOLD_INDEX = "hi_1_s_1"


class InboxBucket(Document):
    """inbox_buckets: up to INBOX_BUCKET_SIZE entries (`s` status id, `a` author id, and what a
    page shows: `n` handle, `t` text, `c` created_at) of one owner's timeline whose status ids
    lie in [lo, hi), newest first (app/strategies/inbox_buckets/buckets.py). The head has
    `_id` = the owner's id, hi = the greatest ObjectId and `s` = the greatest ObjectId, and
    carries `count`, `trimmed` and `owed`; the bucket below bucket B has hi == B.lo and no `s`.
    A loose entry (a fan-out's, not folded into the chain yet) has hi = the greatest ObjectId,
    `s` its status id and one entry in `items` (app/strategies/inbox_buckets/loose.py); no `lo`."""

    owner_id: PydanticObjectId
    hi: PydanticObjectId
    lo: PydanticObjectId | None = None
    s: PydanticObjectId | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)
    v: int = 0

    class Settings:
        name = "inbox_buckets"
        indexes = [
            # The chain's links: a page walks it by point look-ups on (owner, hi); the head
            # (s = MAX_ID) and the loose entries (s = their status) are one range of it, head
            # first when read by `s` descending (a first page's one query).
            IndexModel(
                [("owner_id", ASCENDING), ("hi", ASCENDING), ("s", ASCENDING)],
                unique=True,
                name=INBOX_CHAIN_INDEX,
            ),
            # Which buckets hold a status: a `before` cursor's bucket, a delete's holders.
            IndexModel([("items.s", ASCENDING), ("owner_id", ASCENDING)]),
            # The fold pass's scan (fanout/fold.py): loose entries by age of their status,
            # every owner's at once (hi = MAX_ID, s below a cutoff).
            IndexModel([("hi", ASCENDING), ("s", ASCENDING)], name=INBOX_FOLD_INDEX),
        ]


class AudienceWatermark(Document):
    """recipients_embedded: statuses of `author_id` with id >= `complete_from` carry the full
    audience (author + current friends). Older ones may lack friends added later; they are only
    completed when deletes slide the author's newest-TIMELINE_MAX window down onto them."""

    author_id: PydanticObjectId
    complete_from: PydanticObjectId

    class Settings:
        name = "audience_watermarks"
        indexes = [IndexModel([("author_id", ASCENDING)], unique=True)]


EventKind = Literal["status_posted", "status_deleted", "friendship_changed", "timeline_rebuild"]
EventState = Literal["staged", "pending", "done", "dead"]


class Event(Document):
    """A durable outbox entry, written in the same write path as the change it describes.

    Every event is keyed by the author whose statuses' derived data it affects (`author_id`):
    status events by the status's author, and a friendship change between A and B as two events,
    one keyed by A (A's statuses towards B) and one by B. Handlers reconcile to current state,
    so applying an event twice or out of order converges.
    """

    kind: EventKind
    author_id: PydanticObjectId
    status_id: PydanticObjectId | None = None
    other_id: PydanticObjectId | None = None
    state: EventState = "pending"
    attempts: int = 0
    lease_until: datetime | None = None
    lease_owner: str | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # When the current (or last) attempt was claimed; with done_at it shows that no two events
    # of one author ever ran at the same time.
    started_at: datetime | None = None
    done_at: datetime | None = None
    # A resumable handler's progress per strategy name (receiver_copies: receivers up to this id
    # are done), so a fan-out cut short by a crash resumes after the last batch it wrote, each
    # maintained strategy from its own (see app.pipeline.checkpoint).
    resume_after: dict[str, PydanticObjectId] | None = None
    # A delete's or an unfriend's stamp: the revocation record (app.domain.revocations) this event
    # settles once every maintained strategy has applied it.
    revokes: PydanticObjectId | None = None

    class Settings:
        name = "events"
        indexes = [
            IndexModel([("state", ASCENDING), ("_id", ASCENDING)]),
            IndexModel([("author_id", ASCENDING), ("state", ASCENDING)]),
            # Expiry's range (fanout.housekeeping): applied events, oldest first.
            IndexModel(
                [("done_at", ASCENDING), ("_id", ASCENDING)],
                partialFilterExpression={"state": "done"},
            ),
        ]


class AuthorLease(Document):
    """Per-author mutual exclusion between workers: whoever holds `{_id: author_id}` with
    `until` in the future is the only one applying that author's events (fanout.leases)."""

    id: PydanticObjectId  # the author's id, not a fresh one
    owner: str
    until: datetime

    class Settings:
        name = "author_leases"


class ServiceConfig(Document):
    """Singleton settings stored in the database (`_id: "service"`): the strategy whose derived
    data serves reads, the strategies whose derived data is complete (`built`), and those the
    workers keep up to date (`maintained`; more than one during a switch). See
    app.maintenance.ensure_ready and fanout.switch."""

    id: str  # type: ignore[assignment]
    active_strategy: str
    built: list[str] = Field(default_factory=list)
    maintained: list[str] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "service_config"


class IdempotencyRecord(Document):
    user_id: PydanticObjectId
    key: str
    body_hash: str
    state: Literal["in_flight", "done"] = "in_flight"
    status_id: PydanticObjectId | None = None
    response: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "idempotency_keys"
        indexes = [
            IndexModel([("user_id", ASCENDING), ("key", ASCENDING)], unique=True),
            # Expiry's range (fanout.housekeeping), oldest first.
            IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)]),
        ]


class Marker(Document):
    """A user's read markers, one document per user (`_id` is the user's id, so the only index
    needed is `_id`'s). `home` is `{"last_read_id", "version", "updated_at"}`, absent until the
    first POST /markers; it is only changed by conditional atomic updates (app.domain.markers)."""

    id: PydanticObjectId  # the user's id, not a fresh one
    home: dict[str, Any] | None = None

    class Settings:
        name = "markers"


class UserActivity(Document):
    """When a user last read their timeline (app.domain.activity), one document per user (`_id` is
    the
    user's id). `materialized` says whether the strategy's derived timeline serves their reads:
    false from a return after TIMELINE_ACTIVE_DAYS away until the rebuild of generation
    `returns` has finished (reads are served from the source of truth meanwhile). A user with
    no document has never read and counts as active, so data from before tracking needs no
    migration."""

    id: PydanticObjectId  # the user's id, not a fresh one
    last_read_at: datetime
    materialized: bool = True
    returns: int = 0

    class Settings:
        name = "user_activity"
        indexes = [
            # /health's count of inactive users and fan-out's look-ups are range queries on it.
            IndexModel([("last_read_at", ASCENDING)]),
        ]


class Revocation(Document):
    """A removal that derived data may still hold (app.domain.revocations): `_id` is `s:<status id>`
    for a deleted status, `f:<reader id>:<author handle>` for an ended friendship's one side.
    `rev` is the stamp of the newest delete or unfriend it stands for. Written in the removal's
    own transaction; reads check their items against it by `_id`. Once its event is applied
    it gets `settled` (the server's time, written by the worker only) and is deleted
    SETTLED_KEEP_S later by a range delete on `settled`."""

    id: str  # type: ignore[assignment]  # the key above, not a generated id
    rev: PydanticObjectId
    at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "revocations"
        indexes = [IndexModel([("settled", ASCENDING)], sparse=True)]


DOCUMENT_MODELS: list[type[Document]] = [
    User,
    FriendRequest,
    Friendship,
    Status,
    TimelineEntry,
    TimelineMeta,
    InboxBucket,
    AudienceWatermark,
    HybridEntry,
    HybridMeta,
    LargeAuthor,
    LargeFriend,
    Event,
    AuthorLease,
    ServiceConfig,
    IdempotencyRecord,
    Marker,
    UserActivity,
    Revocation,
    OAuthApp,
    AccessToken,
]
