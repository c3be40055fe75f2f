"""tests/derived.py reads the service's own state: hybrid's crossings as its collections say."""

from __future__ import annotations

import pytest
from bson import ObjectId

from tests.derived import Crossings, large_authors
from tests.harness import Harness


@pytest.mark.parametrize("strategy", ["hybrid"])
async def test_crossings_are_read_from_hybrids_collections(h: Harness) -> None:
    ids = {name: ObjectId((await h.user(name))["id"]) for name in ("ann", "bob", "cat")}
    authors = list(ids.values())
    crossings = Crossings()
    await crossings.observe(h.ctx.store, authors)
    await h.befriend("ann", "bob")
    await h.befriend("ann", "cat")
    await h.drain()
    assert (await large_authors(h.ctx.store)).get(ids["ann"]) == "large"
    await crossings.observe(h.ctx.store, authors)
    assert crossings.up == {ids["ann"]} and crossings.down == set()
    await h.unfriend("ann", "bob")
    await h.unfriend("ann", "cat")
    await h.drain()
    await crossings.observe(h.ctx.store, authors)
    assert crossings.down == {ids["ann"]}
