"""GET/POST /markers and GET /timeline/unread_count."""

from __future__ import annotations

from bson import ObjectId
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.api.parsing import json_body
from app.api.schemas import UpdateMarkers
from app.context import reading_strategy
from app.domain import markers
from app.domain.users import Account


async def get_markers(request: Request, me: Account) -> Payload:
    return markers.markers_json(await markers.get_home(context(request).store, me.id))


async def post_markers(request: Request, me: Account) -> Payload:
    body = await json_body(request, UpdateMarkers)
    # The schema's pattern admits only 24 hex digits; lower case is how ids are printed.
    last_read_id = ObjectId(body.home.last_read_id.lower())
    home = await markers.move_home(
        context(request).database, me.id, last_read_id, body.home.version
    )
    return markers.markers_json(home)


async def unread_count(request: Request, me: Account) -> Payload:
    # A read like GET /timeline (the badge is what a client polls), served by the same
    # strategy so that the two agree while a returning user's rebuild runs.
    ctx = context(request)
    strategy = await reading_strategy(ctx, me.id)
    count, capped = await markers.unread_count(ctx.store, strategy, me.id)
    return {"count": count, "capped": capped}
