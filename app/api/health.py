"""GET /health: liveness of the database and the worker's backlog."""

from __future__ import annotations

from pymongo.errors import PyMongoError
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.errors import Unavailable


async def health(request: Request) -> Payload:
    ctx = context(request)
    try:
        await ctx.database.ping()
        stats = await ctx.queue.backlog()
        inactive = await ctx.activity.count_inactive()
    except PyMongoError:
        raise Unavailable("the database is unavailable") from None
    return {
        "status": "ok",
        "strategy": ctx.strategy.name,
        "database": "embedded" if ctx.database.embedded else "mongodb",
        **stats,
        "inactive_users": inactive,
    }
