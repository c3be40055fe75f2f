"""Strategy name → implementation, resolved once at start-up."""

from __future__ import annotations

from app.settings import StrategyName
from app.strategies.base import Page, StatusView, TimelineStrategy
from app.strategies.fanout_on_read import FanoutOnRead
from app.strategies.receiver_copies import ReceiverCopies
from app.strategies.recipients_embedded import RecipientsEmbedded

STRATEGIES: dict[StrategyName, type[TimelineStrategy]] = {
    "fanout_on_read": FanoutOnRead,
    "recipients_embedded": RecipientsEmbedded,
    "receiver_copies": ReceiverCopies,
}


def build_strategy(name: StrategyName, max_items: int) -> TimelineStrategy:
    return STRATEGIES[name](max_items)


__all__ = ["STRATEGIES", "Page", "StatusView", "TimelineStrategy", "build_strategy"]
