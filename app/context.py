"""What the API and the worker share at run time; built by the lifespan, never global."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bson import ObjectId

from app.domain.activity import Activity
from app.domain.graph import Graph
from app.limits.ratelimit import COLLECTION as RATE_LIMITS_COLLECTION
from app.limits.ratelimit import Limiter, parse_rules
from app.pipeline.outbox import commit_with_events
from app.pipeline.queue import Queue
from app.pipeline.queued import QueueReader
from app.settings import Settings
from app.storage.db import Database, Session
from app.storage.store import Store
from app.strategies import Collaborators, TimelineStrategy, build_strategy

T = TypeVar("T")


@dataclass
class AppContext:
    settings: Settings
    database: Database
    # The collections of `database` and the graph reader over them (app.storage.store,
    # app.domain.graph).
    store: Store
    graph: Graph
    # The event queue over `store` (app.pipeline.queue).
    queue: Queue
    strategy: TimelineStrategy
    # The TIMELINE_ACTIVE_DAYS window and its clock, shared with `strategy` (app.domain.activity).
    activity: Activity
    # Pages of users whose materialized timeline is being rebuilt come from the truth: the
    # fanout_on_read strategy's page code over statuses of self + current friends.
    truth: TimelineStrategy
    # The rate limits in force and their shared counters (app.limits.ratelimit).
    limiter: Limiter
    # Set when this process records an event, so an in-process worker wakes at once.
    events_recorded: asyncio.Event = field(default_factory=asyncio.Event)

    def build_strategy(
        self, name: str, *, window: bool = False, settings: Settings | None = None
    ) -> TimelineStrategy:
        """The strategy `name` over this context's store: the one place strategies are built
        (the configured one by `build_context`, others for a switch, the worker's maintained
        ones, checks and benchmarks). With `window`, it skips inactive receivers
        (TIMELINE_ACTIVE_DAYS); without, everyone counts as active, which is always safe for a
        strategy built on the side. `settings` overrides this context's (a benchmark's knob)."""
        activity = self.activity if window else None
        return _build(settings or self.settings, self.store, self.graph, activity, name)

    async def commit(
        self, events: list[dict[str, Any]], change: Callable[[Session], Awaitable[T]]
    ) -> T:
        """The unit of work: apply `change` and record `events` so that neither can be lost
        without the other (app.pipeline.outbox), then wake an in-process worker."""
        result = await commit_with_events(self.database, self.queue, events, change)
        if events:
            self.events_recorded.set()
        return result


def _build(
    settings: Settings, store: Store, graph: Graph, activity: Activity | None, name: str
) -> TimelineStrategy:
    collab = Collaborators(
        db=store.db,
        statuses=store.statuses,
        graph=graph,
        activity=activity,
        pending=QueueReader(store.events),
        max_items=settings.timeline_max,
    )
    return build_strategy(name, collab, settings)


def strategy_over(store: Store, settings: Settings, name: str) -> TimelineStrategy:
    """The strategy `name` over `store` outside a running service (a benchmark reading pages
    beside it): everyone counts as active."""
    return _build(settings, store, Graph(store), None, name)


async def build_context(settings: Settings, database: Database) -> AppContext:
    store = database.store
    graph = Graph(store)
    activity = Activity(store.user_activity, settings.timeline_active_days)
    strategy = _build(settings, store, graph, activity, settings.timeline_strategy)
    await strategy.ensure_indexes()
    truth = _build(settings, store, graph, None, "fanout_on_read")
    limiter = Limiter(store.db[RATE_LIMITS_COLLECTION], parse_rules(settings.rate_limits))
    if limiter.enabled:
        await limiter.ensure_indexes()
    return AppContext(
        settings=settings,
        database=database,
        store=store,
        graph=graph,
        queue=Queue(store),
        strategy=strategy,
        activity=activity,
        truth=truth,
        limiter=limiter,
    )


async def reading_strategy(ctx: AppContext, user_id: ObjectId) -> TimelineStrategy:
    """Record a read by `user_id` (app.domain.activity) and return the strategy that serves it: the
    configured one, or the truth while a return's rebuild is unfinished. Cursors are status
    ids in both, so a cursor from a truth-served page stays valid after the switch back."""
    if await ctx.activity.touch(ctx.commit, user_id):
        return ctx.strategy
    return ctx.truth
