"""The collections of one database, bound once at start-up and passed to whoever needs them.

Beanie declares the documents, their indexes and migrations (app.storage.models); the hot paths
work on
PyMongo collections directly, and they get them from a `Store` instead of from Beanie's
class-level binding, which ties a process to one database. Two stores over two databases (or
two strategies over one) can therefore live side by side in one process: the benchmark and the
equivalence tests do (tests/test_store.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from app.storage import models

Collection = AsyncCollection[Any]


def _name(model: type[Any]) -> str:
    return str(model.Settings.name)


@dataclass(frozen=True)
class Store:
    db: AsyncDatabase[Any]
    users: Collection
    friend_requests: Collection
    friendships: Collection
    statuses: Collection
    timeline_entries: Collection
    timeline_meta: Collection
    inbox_buckets: Collection
    audience_watermarks: Collection
    hybrid_entries: Collection
    hybrid_meta: Collection
    large_authors: Collection
    large_friends: Collection
    events: Collection
    author_leases: Collection
    service_config: Collection
    idempotency_keys: Collection
    markers: Collection
    user_activity: Collection
    revocations: Collection
    oauth_apps: Collection
    access_tokens: Collection

    @classmethod
    def bind(cls, db: AsyncDatabase[Any]) -> Store:
        """The store of `db`; collection names come from the Beanie declarations."""
        return cls(
            db=db,
            users=db[_name(models.User)],
            friend_requests=db[_name(models.FriendRequest)],
            friendships=db[_name(models.Friendship)],
            statuses=db[_name(models.Status)],
            timeline_entries=db[_name(models.TimelineEntry)],
            timeline_meta=db[_name(models.TimelineMeta)],
            inbox_buckets=db[_name(models.InboxBucket)],
            audience_watermarks=db[_name(models.AudienceWatermark)],
            hybrid_entries=db[_name(models.HybridEntry)],
            hybrid_meta=db[_name(models.HybridMeta)],
            large_authors=db[_name(models.LargeAuthor)],
            large_friends=db[_name(models.LargeFriend)],
            events=db[_name(models.Event)],
            author_leases=db[_name(models.AuthorLease)],
            service_config=db[_name(models.ServiceConfig)],
            idempotency_keys=db[_name(models.IdempotencyRecord)],
            markers=db[_name(models.Marker)],
            user_activity=db[_name(models.UserActivity)],
            revocations=db[_name(models.Revocation)],
            oauth_apps=db[_name(models.OAuthApp)],
            access_tokens=db[_name(models.AccessToken)],
        )
