"""The event queue (app.pipeline.queue) as one owner: no other module reaches the `events`
collection,
every event kind has a handler, and a worker that no longer owns an event cannot move it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, get_args

import pytest
from bson import ObjectId

from app.pipeline.events import HANDLERS, UnknownEvent, apply_event
from app.storage.models import EventKind
from tests.harness import Harness

ROOT = Path(__file__).resolve().parent.parent
# Where the events collection may be named: its owner and its declaration.
OWNERS = {ROOT / "app" / "queue.py", ROOT / "app" / "models.py"}


def _names_event_model(path: Path) -> bool:
    """Whether `path` imports the Event model or asks it for its collection."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        imported = isinstance(node, ast.ImportFrom) and node.module == "app.storage.models"
        if imported and any(alias.name == "Event" for alias in node.names):
            return True
        bound = isinstance(node, ast.Attribute) and node.attr == "get_pymongo_collection"
        if bound and isinstance(node.value, ast.Name) and node.value.id == "Event":
            return True
    return False


def test_only_the_queue_touches_the_events_collection() -> None:
    sources = [
        p for d in ("app", "entrypoints", "fanout", "benchmarks") for p in (ROOT / d).rglob("*.py")
    ]
    assert len(sources) > 20  # the scan found the packages
    assert [
        str(p.relative_to(ROOT)) for p in sources if p not in OWNERS and _names_event_model(p)
    ] == []


def test_every_event_kind_has_a_handler() -> None:
    assert set(HANDLERS) == set(get_args(EventKind))


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_an_unknown_kind_is_refused(h: Harness) -> None:
    with pytest.raises(UnknownEvent):
        await apply_event(
            h.ctx.strategy,
            {"kind": "status_edited", "author_id": ObjectId()},
            user_activity=h.ctx.store.user_activity,
        )


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_only_the_owner_moves_a_claimed_event(h: Harness) -> None:
    author = ObjectId((await h.user("ann"))["id"])
    await h.post("ann", "one")
    event = await h.ctx.queue.claim_oldest(author, "w1", 30.0)
    assert event is not None and event["lease_owner"] == "w1" and event["attempts"] == 1
    assert await h.ctx.queue.claim_oldest(author, "w2", 30.0) is None  # leased to w1

    async def stored() -> dict[str, Any] | None:
        return await h.ctx.store.events.find_one({"_id": event["_id"]})

    before = await stored()
    later = event["created_at"]
    assert not await h.ctx.queue.renew(event["_id"], "w2", later)
    await h.ctx.queue.complete(event["_id"], "w2")
    await h.ctx.queue.park(event["_id"], "w2", "not mine")
    assert not await h.ctx.queue.fail(event, "w2", "not mine")
    await h.ctx.queue.contended(event["_id"], "w2", "not mine", 0.0)
    await h.ctx.queue.hand_back(event["_id"], "w2", 0.0)
    assert await stored() == before
    assert await h.ctx.queue.renew(event["_id"], "w1", later)
    await h.ctx.queue.complete(event["_id"], "w1")
    done = await stored()
    assert done is not None and done["state"] == "done"
    assert await h.ctx.queue.reader.pending_count() == 0
