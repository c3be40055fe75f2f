"""One row of the shard plan: how a collection is spread over a cluster's shards. The core
collections' rows are in app/storage/sharding.py; a strategy declares its own collections' rows
with its registration (app/strategies/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KeyKind = Literal[1, "hashed"]


@dataclass(frozen=True)
class ShardPlan:
    """How one collection is spread. `key` is None for a collection left unsharded."""

    collection: str
    key: tuple[tuple[str, KeyKind], ...] | None
    why: str

    @property
    def routing_field(self) -> str | None:
        """The field mongos routes on: the key's first (for a hashed key, the hashed) field.
        Queries target one shard when they pin it to one value (or a few shards for a few)."""
        return self.key[0][0] if self.key else None

    def key_document(self) -> dict[str, KeyKind]:
        assert self.key is not None
        return dict(self.key)
