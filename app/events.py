"""Applying one outbox event: the domain side of the fanout worker (fanout/ only runs it)."""

from __future__ import annotations

from typing import Any

from app import activity
from app.strategies import TimelineStrategy


class UnknownEvent(Exception):
    pass


async def apply_event(strategy: TimelineStrategy, event: dict[str, Any]) -> None:
    """Apply `event` with `strategy`. Safe to call twice: every handler reconciles."""
    kind = event["kind"]
    author = event["author_id"]
    if kind == "status_posted":
        await strategy.apply_posted(author, event["status_id"])
    elif kind == "status_deleted":
        await strategy.apply_deleted(author, event["status_id"])
    elif kind == "friendship_changed":
        await strategy.apply_friendship(author, event["other_id"])
    elif kind == "timeline_rebuild":
        # A returning inactive user (app.activity). The generation is read first: a return
        # marked after this point may need a rebuild this one does not see, and its own
        # event finishes it.
        generation = await activity.rebuild_generation(author)
        await strategy.rebuild_reader(author)
        await activity.finish_rebuild(author, generation)
    else:
        raise UnknownEvent(f"unknown event kind {kind!r}")
