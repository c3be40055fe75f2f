"""GET /timeline."""

from __future__ import annotations

from starlette.requests import Request

from app import cursors
from app.api.deps import context
from app.api.endpoint import Payload
from app.api.parsing import cursor_param, limit_param
from app.context import reading_strategy
from app.domain.errors import BadRequest
from app.domain.statuses import status_json
from app.domain.timeline_reads import read_page
from app.domain.users import Account
from app.strategies.contract import Page


async def timeline(request: Request, me: Account) -> Payload:
    assert me.id is not None
    limit = limit_param(request)
    before = cursor_param(request, "before")
    after = cursor_param(request, "after")
    if before is not None and after is not None:
        raise BadRequest("use either before or after, not both", code="invalid_cursor")
    ctx = context(request)
    strategy = await reading_strategy(ctx, me.id)
    page = await read_page(
        ctx.store.revocations, strategy, me.id, limit=limit, before=before, after=after
    )
    return page_json(page)


def page_json(page: Page) -> Payload:
    """The body of a timeline page (also what `benchmarks http`'s bare service answers)."""
    items = [
        status_json({"_id": s.id, "author": s.author, "text": s.text, "created_at": s.created_at})
        for s in page.items
    ]
    older = page.next_before()
    return {
        "items": items,
        "next_cursor": cursors.encode(older) if older is not None else None,
        "newest_cursor": cursors.encode(page.items[0].id) if page.items else None,
        "gap": page.gap,
    }
