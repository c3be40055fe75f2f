"""GET /health: liveness of the database and the worker's backlog."""

from __future__ import annotations

from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import JSONResponse

from app import queue
from app.api.deps import context
from app.api.errors import error_response


async def health(request: Request) -> JSONResponse:
    ctx = context(request)
    try:
        await ctx.database.ping()
        stats = await queue.backlog()
        inactive = await ctx.activity.count_inactive()
    except PyMongoError:
        return error_response(503, "database_unavailable", "the database is unavailable")
    return JSONResponse(
        {
            "status": "ok",
            "strategy": ctx.strategy.name,
            "database": "embedded" if ctx.database.embedded else "mongodb",
            **stats,
            "inactive_users": inactive,
        }
    )
