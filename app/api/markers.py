"""GET/POST /markers and GET /timeline/unread_count."""

from __future__ import annotations

from bson import ObjectId
from starlette.requests import Request

from app import markers
from app.api.deps import context
from app.api.endpoint import Payload
from app.api.parsing import json_body
from app.api.schemas import UpdateMarkers
from app.context import reading_strategy
from app.models import User


async def get_markers(request: Request, me: User) -> Payload:
    assert me.id is not None
    return markers.markers_json(await markers.get_home(me.id))


async def post_markers(request: Request, me: User) -> Payload:
    assert me.id is not None
    body = await json_body(request, UpdateMarkers)
    # The schema's pattern admits only 24 hex digits; lower case is how ids are printed.
    last_read_id = ObjectId(body.home.last_read_id.lower())
    home = await markers.move_home(
        context(request).database, me.id, last_read_id, body.home.version
    )
    return markers.markers_json(home)


async def unread_count(request: Request, me: User) -> Payload:
    assert me.id is not None
    # A read like GET /timeline (the badge is what a client polls), served by the same
    # strategy so that the two agree while a returning user's rebuild runs.
    strategy = await reading_strategy(context(request), me.id)
    count, capped = await markers.unread_count(strategy, me.id)
    return {"count": count, "capped": capped}
