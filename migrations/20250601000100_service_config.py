"""Record which strategies' derived data a database already holds (`service_config`), for
databases created before the document existed, so that starting the service with a strategy
whose data was never built is refused instead of serving empty timelines.

The inference is frozen here (not imported from app/): copies in `timeline_entries` mean
receiver_copies was built, statuses carrying an `audience` mean recipients_embedded was, and
fanout_on_read needs no derived data. An empty database is left alone: the first start records
its strategy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from beanie import Document, free_fall_migration

CONFIG_ID = "service"


class ServiceConfig(Document):
    class Settings:
        name = "service_config"


class Forward:
    @free_fall_migration(document_models=[ServiceConfig])
    async def record_built_strategies(self, session: Any) -> None:
        db = ServiceConfig.get_pymongo_collection().database
        config = db["service_config"]
        if await config.find_one({"_id": CONFIG_ID}, session=session) is not None:
            return
        statuses = db["statuses"]
        if await statuses.find_one({}, {"_id": 1}, session=session) is None:
            return
        built = ["fanout_on_read"]
        if await db["timeline_entries"].find_one({}, {"_id": 1}, session=session):
            built.append("receiver_copies")
        if await statuses.find_one({"audience": {"$exists": True}}, {"_id": 1}, session=session):
            built.append("recipients_embedded")
        active = built[-1] if len(built) == 2 else "fanout_on_read"
        await config.insert_one(
            {
                "_id": CONFIG_ID,
                "active_strategy": active,
                "built": sorted(built),
                "maintained": [active],
                "updated_at": datetime.now(UTC),
            },
            session=session,
        )


class Backward:
    @free_fall_migration(document_models=[ServiceConfig])
    async def forget_built_strategies(self, session: Any) -> None:
        config = ServiceConfig.get_pymongo_collection()
        await config.delete_one({"_id": CONFIG_ID}, session=session)
