"""GET /health: liveness of the database and the worker's backlog."""

from __future__ import annotations

from pymongo.errors import PyMongoError
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.errors import Unavailable
from app.models import Event, utcnow


async def backlog() -> dict[str, object]:
    events = Event.get_pymongo_collection()
    waiting = {"state": {"$in": ["pending", "staged"]}}
    pending = await events.count_documents(waiting)
    oldest = await events.find_one(waiting, {"created_at": 1}, sort=[("_id", 1)])
    age = (utcnow() - oldest["created_at"]).total_seconds() if oldest else None
    dead = await events.count_documents({"state": "dead"})
    return {
        "pending_events": pending,
        "oldest_pending_age_s": round(age, 3) if age is not None else None,
        "dead_events": dead,
    }


async def health(request: Request) -> Payload:
    ctx = context(request)
    try:
        await ctx.database.ping()
        stats = await backlog()
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
