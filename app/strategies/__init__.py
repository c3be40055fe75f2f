"""Strategy name → implementation, resolved once at start-up."""

from __future__ import annotations

from app.graph import Graph
from app.settings import HYBRID_THRESHOLD_DEFAULT, StrategyName
from app.store import Store
from app.strategies.base import Page, StatusView, TimelineStrategy
from app.strategies.fanout_on_read import FanoutOnRead
from app.strategies.hybrid import Hybrid
from app.strategies.inbox_buckets import DEFAULT_BUCKET_SIZE, InboxBuckets
from app.strategies.receiver_copies import ReceiverCopies
from app.strategies.recipients_embedded import RecipientsEmbedded

STRATEGIES: dict[StrategyName, type[TimelineStrategy]] = {
    "fanout_on_read": FanoutOnRead,
    "recipients_embedded": RecipientsEmbedded,
    "receiver_copies": ReceiverCopies,
    "inbox_buckets": InboxBuckets,
    "hybrid": Hybrid,
}


def build_strategy(
    name: StrategyName,
    store: Store,
    max_items: int,
    *,
    graph: Graph | None = None,
    hybrid_threshold: int = HYBRID_THRESHOLD_DEFAULT,
    bucket_size: int = DEFAULT_BUCKET_SIZE,
) -> TimelineStrategy:
    """The strategy `name` over `store` (and its graph reader unless one is given), with its
    own knob where it has one (HYBRID_THRESHOLD, INBOX_BUCKET_SIZE)."""
    graph = graph or Graph(store)
    if name == "hybrid":
        return Hybrid(store, graph, max_items, hybrid_threshold)
    if name == "inbox_buckets":
        return InboxBuckets(store, graph, max_items, bucket_size)
    return STRATEGIES[name](store, graph, max_items)


__all__ = ["STRATEGIES", "Page", "StatusView", "TimelineStrategy", "build_strategy"]
