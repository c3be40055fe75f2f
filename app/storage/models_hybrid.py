"""The hybrid strategy's documents (app/strategies/hybrid.py); app.storage.models lists them with
the
rest in DOCUMENT_MODELS."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pymongo import ASCENDING, IndexModel


class LargeAuthor(Document):
    """hybrid: an author whose statuses are merged into pages at read time instead of fanned
    out (more than HYBRID_THRESHOLD friends), or one on the way in or out (app/strategies/
    hybrid_modes.py). No document: an ordinary author, fanned out like receiver_copies."""

    id: PydanticObjectId  # the author's id, not a fresh one
    state: Literal["ascending", "large", "descending"]
    updated_at: datetime

    class Settings:
        name = "large_authors"


class LargeFriend(Document):
    """hybrid: one (reader, large-audience friend) pair. A page of `owner_id` reads the
    friend's statuses from `statuses` and ignores their copies; `materialized` says whether
    the owner's copies of them are kept too (only while the author is descending)."""

    owner_id: PydanticObjectId
    author_id: PydanticObjectId
    materialized: bool = False

    class Settings:
        name = "large_friends"
        indexes = [
            # A page reads its owner's pairs; natural key of the idempotent upserts.
            IndexModel([("owner_id", ASCENDING), ("author_id", ASCENDING)], unique=True),
            # A crossing updates or removes every pair of one author. (`materialized` too: Beanie
            # merges two indexes over the same fields, whatever their order, into one.)
            IndexModel(
                [("author_id", ASCENDING), ("owner_id", ASCENDING), ("materialized", ASCENDING)]
            ),
        ]
