"""`redis_sorted_set`: the peer a user would pick instead of a MongoDB layout, Mastodon's home feed
(app/lib/feed_manager.rb): per reader, a Redis sorted set of status ids, trimmed to TIMELINE_MAX
after each insert; a page is the ids from Redis plus one `_id $in` query on `statuses`.

It runs as a timeline strategy over the benchmark's database (statuses and friendships are the
truth, as for the others) with a real `redis-server` started and stopped here, so that
`StrategyBench` reads and writes it in the same run on the same data. What differs from the
service's strategies, as in Mastodon: nothing refills a feed that an unfriend or a delete
shortened, and a friend's backfill is the author's TIMELINE_MAX newest statuses.

Ids: ObjectIds (96 bits) do not fit a double score, so every member has score 0 and Redis
orders equal scores by member, the id's hex, which is id order; pages use ZREVRANGEBYLEX
(Mastodon's ids are 64-bit and scored as doubles).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bson import ObjectId
from redis.asyncio import Redis

from app.domain.graph import Graph
from app.storage.db import Session
from app.storage.embedded import free_port, terminate
from app.storage.store import Store
from app.strategies.contract import Page, PageQuery
from app.strategies.truth import hydrate, newest_statuses, truth_timeline
from benchmarks.config import REDIS_PEER
from benchmarks.measure import StrategyBench
from benchmarks.monitor import CommandCounter
from benchmarks.results import CollectionStorage, Storage

NAME = REDIS_PEER
# Receivers per pipeline (one round trip): Mastodon's fan-out pushes per receiver in worker
# batches; a pipeline of 1,000 ZADD+trim pairs is ~100 KB, far below any limit.
PIPELINE_BATCH = 1000
# How long redis-server may take to answer PING, and to stop.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PROJECTION = {"author": 1, "text": 1, "created_at": 1}


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server (no persistence) on a free port; yields its URL."""
    binary = redis_server_path()
    if binary is None:
        raise RuntimeError("no redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        log = (Path(tmp) / "redis.log").open("wb")
        proc = subprocess.Popen([*args, "--appendonly", "no"], stdout=log, stderr=log)
        try:
            _wait_ping(proc, port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            terminate(proc, STOP_TIMEOUT_S)
            log.close()


def _wait_ping(proc: subprocess.Popen[bytes], port: int) -> None:
    import redis  # the synchronous client, for this one check

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S}s")
        time.sleep(0.05)


def _key(owner: ObjectId) -> str:
    return f"feed:{owner}"


class RedisSortedSet:
    """Mastodon's home feeds: a sorted set of status ids per reader (a TimelineStrategy, for
    the benchmark only: not registered, so the service never serves it)."""

    name = NAME
    reads_truth = False

    def __init__(
        self,
        store: Store,
        graph: Graph,
        max_items: int,
        redis: Redis,
        counter: CommandCounter | None = None,
    ) -> None:
        self.store = store
        self.graph = graph
        self.max_items = max_items
        self.redis = redis
        self.counter = counter
        # used_memory of the server before any feed (set by the benchmark once connected).
        self.empty_bytes = 0

    async def ensure_indexes(self) -> None:
        """Nothing in MongoDB beyond the models' indexes."""

    # -- writes --------------------------------------------------------------------------------
    async def _push(self, owners: Sequence[ObjectId], ids: Sequence[ObjectId]) -> None:
        """ZADD `ids` to each owner's feed and trim it to TIMELINE_MAX, one pipeline a batch."""
        members = {str(i): 0 for i in ids}
        for start in range(0, len(owners), PIPELINE_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for owner in owners[start : start + PIPELINE_BATCH]:
                pipe.zadd(_key(owner), members)
                pipe.zremrangebyrank(_key(owner), 0, -self.max_items - 1)
            await self._execute(pipe, written=len(members), per=2)

    async def _execute(self, pipe: Any, *, written: int, per: int) -> list[Any]:
        """Run a pipeline, counted like a MongoDB command: one round trip, its commands, the
        members written (as documents) and the bytes of its arguments."""
        commands = list(pipe.command_stack)
        result: list[Any] = await pipe.execute()
        if self.counter is not None:
            payload = sum(len(str(a)) for args, _options in commands for a in args)
            self.counter.external(
                "redis", len(commands), docs=written * len(commands) // per, nbytes=payload
            )
        return result

    async def prepare_status(self, status: dict[str, Any], *, session: Session) -> None:
        """Nothing to add to a status."""

    async def after_post(self, status: dict[str, Any]) -> None:
        """The author's feed took it in `status_created`."""

    async def after_delete(self, status: dict[str, Any]) -> None:
        """The author's feed lost it in `status_deleted`."""

    async def status_created(self, status: dict[str, Any], *, session: Session) -> None:
        await self._push([status["author_id"]], [status["_id"]])

    async def status_deleted(self, status: dict[str, Any], *, session: Session) -> None:
        await self.redis.zrem(_key(status["author_id"]), str(status["_id"]))

    async def apply_posted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        found = await self.store.statuses.find_one({"author_id": author_id, "_id": status_id})
        if found is not None:
            await self._push([author_id, *await self.graph.friend_ids(author_id)], [status_id])

    async def apply_deleted(self, author_id: ObjectId, status_id: ObjectId) -> None:
        owners = [author_id, *await self.graph.friend_ids(author_id)]
        for start in range(0, len(owners), PIPELINE_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for owner in owners[start : start + PIPELINE_BATCH]:
                pipe.zrem(_key(owner), str(status_id))
            await self._execute(pipe, written=1, per=1)

    async def apply_friendship(self, author_id: ObjectId, other_id: ObjectId) -> None:
        if await self.graph.are_friends(author_id, other_id):
            newest = await newest_statuses(self.store.statuses, author_id, self.max_items)
            if newest:
                await self._push([other_id], [s["_id"] for s in newest])
            return
        oldest = await self.redis.zrange(_key(other_id), 0, 0)
        if not oldest:
            return
        floor = ObjectId(str(oldest[0]))
        mine = {"author_id": author_id, "_id": {"$gte": floor}}
        ids = [str(d["_id"]) async for d in self.store.statuses.find(mine, {"_id": 1})]
        if ids:
            await self.redis.zrem(_key(other_id), *ids)

    async def rebuild(self, user_id: ObjectId) -> int:
        friends = await self.graph.friend_ids(user_id)
        truth = await truth_timeline(self.store.statuses, user_id, friends, self.max_items)
        await self.redis.delete(_key(user_id))
        if truth:
            await self._push([user_id], [s["_id"] for s in truth])
        return len(truth)

    async def rebuild_author(self, user_id: ObjectId) -> int:
        return 0

    async def rebuild_reader(self, user_id: ObjectId) -> int:
        return 0  # the peer skips no reader

    # -- reads ---------------------------------------------------------------------------------
    async def _ids(
        self, owner: ObjectId, before: ObjectId | None, after: ObjectId | None, want: int
    ) -> list[ObjectId]:
        high = f"({before}" if before is not None else "+"
        low = f"({after}" if after is not None else "-"
        raw = await self.redis.zrevrangebylex(_key(owner), high, low, start=0, num=want)
        if self.counter is not None:
            self.counter.external("redis", 1, docs=0, nbytes=0)
        return [ObjectId(str(m)) for m in raw]

    async def read(
        self,
        user_id: ObjectId,
        *,
        limit: int,
        before: ObjectId | None = None,
        after: ObjectId | None = None,
    ) -> Page:
        ids = await self._ids(
            user_id, None if after else before, after, min(limit + 1, self.max_items)
        )
        more = len(ids) > limit
        return Page(
            await hydrate(self.store.statuses, ids[:limit]),
            has_older=more,
            gap=more and after is not None,
        )

    async def count_newer(self, user_id: ObjectId, after: ObjectId | None) -> int:
        low = f"({after}" if after is not None else "-"
        return min(int(await self.redis.zlexcount(_key(user_id), low, "+")), self.max_items)

    async def first_page_query(self, user_id: ObjectId, limit: int) -> PageQuery:
        """The MongoDB part of a first page: the statuses of the ids Redis gave."""
        ids = await self._ids(user_id, None, None, min(limit, self.max_items))
        return PageQuery(
            self.store.statuses, {"_id": {"$in": ids}}, [("_id", -1)], limit, PROJECTION
        )

    async def timeline_ids(self, user_id: ObjectId) -> list[ObjectId]:
        raw = await self.redis.zrevrange(_key(user_id), 0, self.max_items - 1)
        return [ObjectId(str(m)) for m in raw]

    async def used_memory(self) -> int:
        info = await self.redis.info("memory")
        return int(info["used_memory"])


class PeerBench(StrategyBench):
    """StrategyBench over the peer: its storage adds the feeds' memory in Redis (the server's
    `used_memory` above an empty server's) to the database's."""

    async def storage(self) -> Storage:
        peer = self.strategy
        assert isinstance(peer, RedisSortedSet)
        base = await super().storage()
        feeds = max(0, await peer.used_memory() - peer.empty_bytes)
        collections = {
            **base.collections,
            "redis feeds": CollectionStorage(
                count=int(await peer.redis.dbsize()), data_bytes=feeds, index_bytes=0
            ),
        }
        return Storage(base.data_bytes + feeds, base.index_bytes, collections)
