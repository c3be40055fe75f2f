"""Per-receiver copies: receiver_copies' entries and marks, and hybrid's materialized side laid
out the same way in collections of its own; app.storage.models lists them with the rest in
DOCUMENT_MODELS."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel


class TimelineEntry(Document):
    """receiver_copies: one entry per (owner, status), carrying what a page shows."""

    owner_id: PydanticObjectId
    status_id: PydanticObjectId
    author_id: PydanticObjectId
    author: str
    text: str
    created_at: datetime

    class Settings:
        name = "timeline_entries"
        indexes = [
            # Natural key (idempotent upserts) and the page index: equality on owner, order by id.
            IndexModel([("owner_id", ASCENDING), ("status_id", DESCENDING)], unique=True),
            # A deleted status leaves every timeline.
            IndexModel([("status_id", ASCENDING)]),
            # Unfriend removes one author's entries from one owner's timeline.
            IndexModel([("owner_id", ASCENDING), ("author_id", ASCENDING)]),
        ]


class TimelineMeta(Document):
    """receiver_copies: whether an owner's timeline was ever trimmed (then removals must refill)."""

    owner_id: PydanticObjectId
    trimmed: bool = False
    # Deleted statuses whose removal still owes this trimmed timeline a refill (set before the
    # copies go, cleared after the refill), so that a retried delete finds whom it owes.
    owed: list[PydanticObjectId] = Field(default_factory=list)

    class Settings:
        name = "timeline_meta"
        indexes = [IndexModel([("owner_id", ASCENDING)], unique=True)]


class HybridEntry(TimelineEntry):
    """hybrid: the materialized side of its timelines, laid out as receiver_copies' entries
    (same fields, same indexes: its Settings inherit TimelineEntry's and rename the
    collection) in a collection of its own, since what hybrid materializes differs (no copies
    of large-audience authors) and both can be maintained during a switch. Neither class is an
    inheritance root (`is_root`), so Beanie keeps them apart and marks neither's documents."""

    class Settings(TimelineEntry.Settings):
        name = "hybrid_entries"


class HybridMeta(TimelineMeta):
    """hybrid: receiver_copies' TimelineMeta, for hybrid_entries."""

    class Settings(TimelineMeta.Settings):
        name = "hybrid_meta"
