"""The benchmark's redis_sorted_set peer (benchmarks/redis_peer.py) against a real redis-server:
fanned out from the same statuses, its pages equal the truth's, trimmed to TIMELINE_MAX."""

from __future__ import annotations

import pytest
from bson import ObjectId
from redis.asyncio import Redis

from benchmarks.redis_peer import RedisSortedSet, redis_server, redis_server_path
from tests.harness import Harness

pytestmark = [
    pytest.mark.skipif(redis_server_path() is None, reason="no redis-server on PATH"),
    pytest.mark.parametrize("strategy", ["fanout_on_read"]),  # the truth the peer reads
    pytest.mark.parametrize("timeline_max", [4]),
]


async def test_the_peer_serves_the_truths_pages(h: Harness) -> None:
    for handle in ("ann", "bob", "cat"):
        await h.user(handle)
    await h.befriend("ann", "bob")
    posted = [(await h.post(a, f"{a} {i}"))["id"] for i in range(3) for a in ("ann", "bob", "cat")]
    ids = {
        handle: ObjectId((await h.ctx.store.users.find_one({"handle": handle}))["_id"])
        for handle in ("ann", "bob", "cat")
    }
    with redis_server() as url:
        redis = Redis.from_url(url, decode_responses=True)
        try:
            peer = RedisSortedSet(h.ctx.store, h.ctx.graph, 4, redis)
            for sid in posted:
                status = await h.ctx.store.statuses.find_one({"_id": ObjectId(sid)})
                assert status is not None
                await peer.apply_posted(status["author_id"], status["_id"])
            truth = await h.ctx.strategy.timeline_ids(ids["ann"])
            assert len(truth) == 4  # trimmed: ann and bob posted six
            assert await peer.timeline_ids(ids["ann"]) == truth
            first = await peer.read(ids["ann"], limit=3)
            assert [s.id for s in first.items] == truth[:3] and first.has_older
            rest = await peer.read(ids["ann"], limit=3, before=truth[2])
            assert [s.id for s in rest.items] == truth[3:] and not rest.has_older
            newer = await peer.read(ids["ann"], limit=1, after=truth[2])
            assert [s.id for s in newer.items] == truth[:1] and newer.gap
            # Unfriend: bob's statuses leave ann's feed (not refilled, as in Mastodon).
            await h.unfriend("ann", "bob")
            await peer.apply_friendship(ids["bob"], ids["ann"])
            assert await peer.timeline_ids(ids["ann"]) == [
                i for i in truth if i not in {ObjectId(p) for p in posted[1::3]}
            ]
        finally:
            await redis.aclose()
