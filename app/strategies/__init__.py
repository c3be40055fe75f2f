"""Strategy name → implementation, resolved once at start-up."""

from __future__ import annotations

from app.graph import Graph
from app.settings import StrategyName
from app.store import Store
from app.strategies.base import Page, StatusView, TimelineStrategy
from app.strategies.fanout_on_read import FanoutOnRead
from app.strategies.inbox_buckets import DEFAULT_BUCKET_SIZE, InboxBuckets
from app.strategies.receiver_copies import ReceiverCopies
from app.strategies.recipients_embedded import RecipientsEmbedded

STRATEGIES: dict[StrategyName, type[TimelineStrategy]] = {
    "fanout_on_read": FanoutOnRead,
    "recipients_embedded": RecipientsEmbedded,
    "receiver_copies": ReceiverCopies,
    "inbox_buckets": InboxBuckets,
}


def build_strategy(
    name: StrategyName,
    store: Store,
    max_items: int,
    *,
    graph: Graph | None = None,
    bucket_size: int = DEFAULT_BUCKET_SIZE,
) -> TimelineStrategy:
    """The strategy `name` over `store` (and its graph reader unless one is given);
    `bucket_size` is INBOX_BUCKET_SIZE, for inbox_buckets."""
    if name == "inbox_buckets":
        return InboxBuckets(store, graph or Graph(store), max_items, bucket_size)
    return STRATEGIES[name](store, graph or Graph(store), max_items)


__all__ = ["STRATEGIES", "Page", "StatusView", "TimelineStrategy", "build_strategy"]
