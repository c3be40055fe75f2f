"""Collections are passed in (app.storage.store), not reached through Beanie's class binding:
strategies
over two stores, and two strategies over one store, run side by side in one process."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from app.context import strategy_over
from app.domain.graph import Graph
from app.storage import models
from app.storage.store import Store
from tests import harness
from tests.harness import Harness, running
from tests.model import Model

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
        embedded = strategy_over(second, h.ctx.settings, "recipients_embedded")
        on_read = strategy_over(second, h.ctx.settings, "fanout_on_read")
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
        await Graph(second).unlink(alice, bob, session=None)
        assert await on_read.timeline_ids(bob) != served[bob]
        assert await h.ctx.truth.timeline_ids(bob) == served[bob]
    finally:
        await h.ctx.database.client.drop_database(other_db.name)


# Two whole apps in one process: small, so that trimming (TIMELINE_MAX) is exercised too.
APPS = ("receiver_copies", "recipients_embedded")
APP_USERS = ("ann", "ben", "cat", "dan")
APP_OPERATIONS = 40
APP_TIMELINE_MAX = 4


@dataclass
class App:
    """One running app and the reference model of what it was asked to do."""

    h: Harness
    model: Model
    ids: dict[int, str] = field(default_factory=dict)  # model number -> status id

    async def step(self, rng: random.Random, i: int) -> None:
        a, b = rng.sample(APP_USERS, 2)
        roll = rng.random()
        mine = self.model.statuses_of(a)
        if roll < 0.45:
            number = self.model.post(a)
            self.ids[number] = (await self.h.post(a, f"{self.h.ctx.strategy.name} {i}"))["id"]
        elif roll < 0.6 and mine:
            number = rng.choice(mine)
            self.model.delete(number)
            await self.h.delete(a, self.ids[number])
        elif roll < 0.85:
            await self.h.befriend(a, b)
            self.model.request(a, b)
            self.model.accept(b, a)
        else:
            await self.h.unfriend(a, b)
            self.model.unfriend(a, b)

    async def check(self) -> None:
        numbers = {v: k for k, v in self.ids.items()}
        for user in APP_USERS:
            got = [numbers.get(i, -1) for i in await self.h.timeline_ids(user)]
            assert got == self.model.timeline(user), (self.h.ctx.strategy.name, user)


async def test_two_apps_side_by_side_in_one_process(mongo_url: str) -> None:
    """Two whole apps (API, lifespan, worker) over two databases with two strategies, driven
    in turns: each serves its own users and statuses only, as its reference model says. The
    same handles exist in both: a user written through one app's binding into the other's
    database would collide (409) or be seen by the wrong app."""
    rng = random.Random(10)
    first = harness.test_settings(mongo_url, APPS[0], APP_TIMELINE_MAX)
    second = harness.test_settings(mongo_url, APPS[1], APP_TIMELINE_MAX)
    async with running(first) as h1, running(second) as h2:
        apps = [App(h1, Model(APP_TIMELINE_MAX)), App(h2, Model(APP_TIMELINE_MAX))]
        for handle in APP_USERS:
            for app in apps:
                await app.h.user(handle)
        # A token of one app means nothing to the other.
        assert h1.tokens["ann"] != h2.tokens["ann"]
        r = await h2.client.get("/me", headers=h1.auth("ann"))
        assert r.status_code == 401, r.text
        for i in range(APP_OPERATIONS):
            for app in apps:
                await app.step(rng, i)
            if i % 10 == 9:  # both workers at once, then both APIs
                await asyncio.gather(h1.drain(), h2.drain())
                for app in apps:
                    await app.check()
        await asyncio.gather(h1.drain(), h2.drain())
        for app in apps:
            await app.check()
            counted = await app.h.ctx.store.statuses.count_documents({})
            assert counted == len(app.model.statuses)
            assert await app.h.ctx.queue.reader.pending_count() == 0
