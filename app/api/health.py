"""GET /health: liveness of the database and the worker's backlog."""

from __future__ import annotations

from pymongo.errors import PyMongoError
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.context import AppContext
from app.domain.errors import Unavailable
from app.domain.users import handles_by_id


async def health(request: Request) -> Payload:
    ctx = context(request)
    try:
        await ctx.database.ping()
        stats = await ctx.queue.reader.backlog()
        inactive = await ctx.activity.count_inactive()
        top = await backlog_authors(ctx)
    except PyMongoError:
        raise Unavailable("the database is unavailable") from None
    return {
        "status": "ok",
        "strategy": ctx.strategy.name,
        "database": "embedded" if ctx.database.embedded else "mongodb",
        **stats,
        "inactive_users": inactive,
        "backlog_authors": [{"author": handle, "pending": n} for handle, n in top],
    }


async def backlog_authors(ctx: AppContext) -> list[tuple[str, int]]:
    """The authors with the most events waiting (queued.BACKLOG_TOP_AUTHORS of them), by handle
    (a deleted user's events show under its id), most first."""
    top = await ctx.queue.reader.top_backlogs()
    accounts = await handles_by_id(ctx.store, [author for author, _ in top])
    return [(accounts[a].handle if a in accounts else str(a), n) for a, n in top]
