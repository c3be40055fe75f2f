"""Applying one outbox event: the domain side of the fanout worker (fanout/ only runs it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from app.domain import activity
from app.storage.models import EventKind
from app.storage.store import Collection
from app.strategies import TimelineStrategy

# A handler applies one kind of event with one strategy. Every handler reconciles to current
# state, so it is safe to run twice or out of order. `event` is an app.pipeline.queue.QueuedEvent
# (or a
# stored event document: the handlers read only the fields every event of their kind has).
# `user_activity` is the activity collection a returning reader's rebuild finishes in.
Handler = Callable[[TimelineStrategy, Mapping[str, Any], Collection], Awaitable[None]]


class UnknownEvent(Exception):
    pass


async def _posted(
    strategy: TimelineStrategy, event: Mapping[str, Any], user_activity: Collection
) -> None:
    await strategy.apply_posted(event["author_id"], event["status_id"])


async def _deleted(
    strategy: TimelineStrategy, event: Mapping[str, Any], user_activity: Collection
) -> None:
    await strategy.apply_deleted(event["author_id"], event["status_id"])


async def _friendship(
    strategy: TimelineStrategy, event: Mapping[str, Any], user_activity: Collection
) -> None:
    await strategy.apply_friendship(event["author_id"], event["other_id"])


async def _rebuild(
    strategy: TimelineStrategy, event: Mapping[str, Any], user_activity: Collection
) -> None:
    # A returning inactive user (app.domain.activity). The generation is read first: a return marked
    # after this point may need a rebuild this one does not see, and its own event finishes it.
    author = event["author_id"]
    coll = user_activity
    generation = await activity.rebuild_generation(coll, author)
    await strategy.rebuild_reader(author)
    await activity.finish_rebuild(coll, author, generation)


HANDLERS: dict[EventKind, Handler] = {
    "status_posted": _posted,
    "status_deleted": _deleted,
    "friendship_changed": _friendship,
    "timeline_rebuild": _rebuild,
}


async def apply_event(
    strategy: TimelineStrategy, event: Mapping[str, Any], *, user_activity: Collection
) -> None:
    """Apply `event` with `strategy`. Safe to call twice: every handler reconciles."""
    handler = HANDLERS.get(event["kind"])
    if handler is None:
        raise UnknownEvent(f"unknown event kind {event['kind']!r}")
    await handler(strategy, event, user_activity)
