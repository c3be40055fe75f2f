"""GET /timeline."""

from __future__ import annotations

from starlette.requests import Request

from app import cursors
from app.api.deps import context
from app.api.endpoint import Payload
from app.api.parsing import cursor_param, limit_param
from app.context import reading_strategy
from app.errors import BadRequest
from app.statuses import status_json
from app.users import Account


async def timeline(request: Request, me: Account) -> Payload:
    assert me.id is not None
    limit = limit_param(request)
    before = cursor_param(request, "before")
    after = cursor_param(request, "after")
    if before is not None and after is not None:
        raise BadRequest("use either before or after, not both", code="invalid_cursor")
    strategy = await reading_strategy(context(request), me.id)
    page = await strategy.read(me.id, limit=limit, before=before, after=after)
    items = [
        status_json({"_id": s.id, "author": s.author, "text": s.text, "created_at": s.created_at})
        for s in page.items
    ]
    return {
        "items": items,
        "next_cursor": cursors.encode(page.items[-1].id) if page.has_older else None,
        "newest_cursor": cursors.encode(page.items[0].id) if page.items else None,
        "gap": page.gap,
    }
