"""The storage a materialized timeline needs: how one family keeps each reader's items.

`MaterializedTimelines` (timelines.py) writes the fan-out, the refills, the rebuild passes and
the trim bookkeeping once, against this protocol; a layout only says how items are stored.
receiver_copies keeps one entry document per (reader, status); inbox_buckets keeps a chain of
bucket documents per reader. Every write of a layout is fenced (app.pipeline.checkpoint) and
idempotent:
the same call twice leaves what one call leaves.

A layout keeps two duties per reader beside the items, both durable:
- *trimmed*: the reader's timeline was cut to TIMELINE_MAX (or a backfill stopped there), so it
  may miss older statuses: a removal from it must refill it from the truth;
- *owed*: the removal of a status owes this (trimmed) reader a refill; recorded before the
  items go, so a retry after a crash still finds whom it owes although nothing is left to find.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bson import ObjectId

#: (status id, author id) of one stored item
Item = tuple[ObjectId, ObjectId]


class Layout(Protocol):
    async def deliver(
        self, owners: list[ObjectId], status: dict[str, Any]
    ) -> tuple[int, list[ObjectId]]:
        """Put `status` in each of `owners`' timelines (one batch of a fan-out; nothing twice).
        Returns how many were new, and the owners that may now hold more than TIMELINE_MAX
        and must be trimmed."""
        ...

    async def place(self, owner: ObjectId, statuses: list[dict[str, Any]]) -> int:
        """Put `statuses` (any age, any order) in the owner's timeline, each once; returns how
        many were new. The caller trims."""
        ...

    async def items(self, owner: ObjectId, floor: ObjectId | None = None) -> list[Item]:
        """The owner's stored items at or above `floor` (all when None), newest first."""
        ...

    async def remove(self, owner: ObjectId, doomed: Callable[[ObjectId, ObjectId], bool]) -> int:
        """Remove the owner's items for which `doomed(status id, author id)` holds; returns how
        many went."""
        ...

    async def remove_author(self, owner: ObjectId, author_id: ObjectId) -> int:
        """Remove every item of `author_id` from the owner's timeline (an unfriend)."""
        ...

    async def holders(self, status_id: ObjectId) -> set[ObjectId]:
        """The owners whose timelines hold `status_id`."""
        ...

    async def remove_status(self, status_id: ObjectId, holders: list[ObjectId]) -> None:
        """Remove `status_id` from every timeline (`holders` are those found to hold it)."""
        ...

    async def trim(self, owner: ObjectId) -> int | None:
        """Cut the owner's timeline to its TIMELINE_MAX newest items, marking it trimmed before
        the look that sets the cut (a removal that checks the mark afterwards refills). Returns
        how many items were left after a cut, or None when there was nothing to cut."""
        ...

    async def mark_trimmed(self, owner: ObjectId) -> None: ...

    async def is_trimmed(self, owner: ObjectId) -> bool: ...

    async def mark_owed(self, owners: list[ObjectId], status_id: ObjectId) -> None:
        """Record on the trimmed ones of `owners` that removing `status_id` owes them a refill."""
        ...

    async def owed(self, owners: list[ObjectId], status_id: ObjectId) -> list[ObjectId]:
        """Those of `owners` still owed a refill for `status_id`."""
        ...

    async def paid(self, owner: ObjectId, status_id: ObjectId) -> None:
        """The refill owed to `owner` for `status_id` is done."""
        ...
