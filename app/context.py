"""What the API and the worker share at run time; built by the lifespan, never global."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.db import Database
from app.settings import Settings
from app.strategies import TimelineStrategy, build_strategy


@dataclass
class AppContext:
    settings: Settings
    database: Database
    strategy: TimelineStrategy
    # Set when this process records an event, so an in-process worker wakes at once.
    events_recorded: asyncio.Event = field(default_factory=asyncio.Event)


async def build_context(settings: Settings, database: Database) -> AppContext:
    strategy = build_strategy(settings.timeline_strategy, settings.timeline_max)
    await strategy.ensure_indexes()
    return AppContext(settings=settings, database=database, strategy=strategy)
