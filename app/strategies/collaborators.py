"""What a strategy is given when it is built (app.strategies.build_strategy), and nothing more.

A strategy reads the source of truth (`statuses`, and friendships through the graph reader), may
skip inactive readers (the activity window), may ask which fan-outs are still on their way (the
settled check of a refill), and owns the collections its registration declares, taken by name
from `db` by the factory: it never reaches into the whole store (tests/test_architecture.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.database import AsyncDatabase

from app.storage.store import Collection

if TYPE_CHECKING:
    from app.domain.activity import Activity
    from app.domain.graph import Graph
    from app.pipeline.queued import QueueReader


@dataclass(frozen=True)
class Collaborators:
    #: where the strategy's declared collections live
    db: AsyncDatabase[Any]
    #: the source of truth a strategy reads (and recipients_embedded annotates)
    statuses: Collection
    graph: Graph
    #: the TIMELINE_ACTIVE_DAYS window; None: everyone counts as active, which is always safe
    #: (a strategy built on the side, the benchmark's no-window baseline)
    activity: Activity | None
    #: the event queue, read only: which posts' fan-outs have not finished
    pending: QueueReader
    #: TIMELINE_MAX
    max_items: int

    def collection(self, name: str) -> Collection:
        """One of the strategy's declared collections (the factory passes them in)."""
        return self.db[name]
