"""Collections are passed in (app.store), not reached through Beanie's class binding: strategies
over two stores, and two strategies over one store, run side by side in one process."""

from __future__ import annotations

import pytest

from app import models
from app.graph import Graph
from app.store import Store
from app.strategies import build_strategy
from tests.harness import Harness

# Copied from the API-written database into a second one: the source of truth.
TRUTH = ("users", "friendships", "statuses")


def test_the_store_has_every_declared_collection() -> None:
    declared = {str(m.Settings.name) for m in models.DOCUMENT_MODELS}  # type: ignore[attr-defined]
    bound = {f for f in Store.__dataclass_fields__ if f != "db"}
    assert {getattr(models, m.__name__).Settings.name for m in models.DOCUMENT_MODELS} == declared
    assert bound == declared


@pytest.mark.parametrize("strategy", ["receiver_copies"])
async def test_strategies_over_two_stores_side_by_side(h: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        await h.user(name)
    await h.befriend("alice", "bob")
    await h.befriend("bob", "carol")
    for i in range(4):
        await h.post("alice", f"a{i}")
        await h.post("carol", f"c{i}")
    await h.post("bob", "b0")
    await h.drain()
    first = h.ctx.store
    users = [d["_id"] async for d in first.users.find({}, {"_id": 1})]
    served = {u: await h.ctx.strategy.timeline_ids(u) for u in users}

    other_db = h.ctx.database.client[f"{first.db.name}_other"]
    second = Store.bind(other_db)
    assert second.statuses.full_name != first.statuses.full_name
    try:
        for coll in TRUTH:
            docs = await getattr(first, coll).find({}).to_list()
            await getattr(second, coll).insert_many(docs)
        graph = Graph(second)
        embedded = build_strategy("recipients_embedded", second, h.ctx.settings.timeline_max)
        on_read = build_strategy("fanout_on_read", second, h.ctx.settings.timeline_max, graph=graph)
        await embedded.ensure_indexes()
        for u in users:
            await embedded.rebuild(u)
        # The three strategies, over two databases, serve the same timelines.
        for u in users:
            assert await embedded.timeline_ids(u) == served[u]
            assert await on_read.timeline_ids(u) == served[u]
        # What the second store's strategy wrote stayed in its own database.
        assert await first.statuses.count_documents({"audience": {"$exists": True}}) == 0
        assert await second.statuses.count_documents({"audience": {"$exists": True}}) == 9
        # A change to one store's truth is seen only by strategies over that store.
        alice = (await second.users.find_one({"handle": "alice"}))["_id"]
        bob = (await second.users.find_one({"handle": "bob"}))["_id"]
        await graph.unlink(alice, bob, session=None)
        assert await on_read.timeline_ids(bob) != served[bob]
        assert await h.ctx.truth.timeline_ids(bob) == served[bob]
    finally:
        await h.ctx.database.client.drop_database(other_db.name)
