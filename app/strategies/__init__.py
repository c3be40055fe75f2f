"""The strategy registry: name → what the strategy declares about itself and how it is built,
resolved once at start-up (TIMELINE_STRATEGY). Adding a strategy is its own package under
app/strategies/ plus one `register` line (docs/design.md, "How to add a strategy").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.storage.shard_plan import ShardPlan
from app.strategies import (
    fanout_on_read,
    hybrid,
    inbox_buckets,
    receiver_copies,
    recipients_embedded,
)
from app.strategies.collaborators import Collaborators
from app.strategies.contract import Page, PageQuery, StatusView, TimelineStrategy

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy declares: its name, how it is built from its collaborators and the
    settings, the collections holding its derived data (it reads and writes those, the source
    of truth and nothing else: tests/test_architecture.py), and how to tell that a database
    holds its derived data (for a database from before `service_config`, app.maintenance)."""

    name: str
    build: Callable[[Collaborators, Settings], TimelineStrategy]
    collections: tuple[str, ...] = ()
    #: (collection, filter): a matching document says the derived data is there; None for a
    #: strategy with no derived data, always ready to serve any database
    built_probe: tuple[str, dict[str, Any]] | None = field(default=None)
    #: how each of its collections is spread over a sharded cluster (`timeline shard`)
    shards: tuple[ShardPlan, ...] = ()

    @property
    def always_built(self) -> bool:
        return self.built_probe is None


_REGISTRY: dict[str, StrategySpec] = {}


def register(spec: StrategySpec) -> None:
    """Make `spec` a strategy TIMELINE_STRATEGY may name (again: the later one wins)."""
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a registration (a test's toy strategy, when the test ends)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def spec(name: str) -> StrategySpec:
    return _REGISTRY[name]


def specs() -> tuple[StrategySpec, ...]:
    return tuple(_REGISTRY.values())


def build_strategy(name: str, collab: Collaborators, settings: Settings) -> TimelineStrategy:
    """The strategy `name` over `collab`, with its own knobs from `settings`."""
    return _REGISTRY[name].build(collab, settings)


register(
    StrategySpec(
        "fanout_on_read", lambda c, s: fanout_on_read.build(c), collections=(), built_probe=None
    )
)
register(
    StrategySpec(
        "recipients_embedded",
        lambda c, s: recipients_embedded.build(c),
        collections=(recipients_embedded.WATERMARKS,),
        built_probe=("statuses", {"audience": {"$exists": True}}),
        shards=recipients_embedded.SHARDS,
    )
)
register(
    StrategySpec(
        "receiver_copies",
        lambda c, s: receiver_copies.build(c),
        collections=(receiver_copies.ENTRIES, receiver_copies.META),
        built_probe=(receiver_copies.ENTRIES, {}),
        shards=receiver_copies.SHARDS,
    )
)
register(
    StrategySpec(
        "hybrid",
        lambda c, s: hybrid.build(c, s.hybrid_threshold),
        collections=(hybrid.ENTRIES, hybrid.META, hybrid.LARGE_AUTHORS, hybrid.LARGE_FRIENDS),
        built_probe=(hybrid.ENTRIES, {}),
        shards=hybrid.SHARDS,
    )
)
register(
    StrategySpec(
        "inbox_buckets",
        lambda c, s: inbox_buckets.build(c, s.inbox_bucket_size),
        collections=(inbox_buckets.COLLECTION,),
        built_probe=(inbox_buckets.COLLECTION, {}),
        shards=inbox_buckets.SHARDS,
    )
)

#: the strategies this package ships (a test may register more)
STRATEGY_NAMES: tuple[str, ...] = names()

__all__ = [
    "STRATEGY_NAMES",
    "Collaborators",
    "Page",
    "PageQuery",
    "StatusView",
    "StrategySpec",
    "TimelineStrategy",
    "build_strategy",
    "names",
    "register",
    "spec",
    "specs",
    "unregister",
]
