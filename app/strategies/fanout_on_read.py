"""fan-out-on-read: each status is stored once; a page is one query over `(author_id, _id)`
with `$in` over the reader and the reader's current friends, sorted and limited by the database.

Writes cost nothing extra and friendship changes are free; reads pay instead. On mongod the
planner merges one index scan per `$in` value (SORT_MERGE, up to 200 values: the
`internalQueryMaxScansToExplode` default), so a page examines about `limit` keys per value; with
more friends than that it falls back to a blocking in-memory sort of every matching key.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from app.strategies.base import TimelineStrategy


class FanoutOnRead(TimelineStrategy):
    name = "fanout_on_read"
    reads_truth = True  # a delete or an unfriend shows in the very next page
    count_hint = [("author_id", 1), ("_id", -1)]

    def collection(self) -> AsyncCollection[Any]:
        return self.store.statuses

    async def scope(self, user_id: ObjectId) -> dict[str, Any]:
        authors = [user_id, *await self.graph.friend_ids(user_id)]
        return {"author_id": {"$in": authors}}
