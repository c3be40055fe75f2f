"""`GET /api/v1/timelines/home` with Mastodon's paging: the same strategy and the same timeline
as `GET /timeline` (app.context.reading_strategy, app.domain.timeline_reads' checked reads).

- `max_id`: older than it; `since_id`: the newest items above it (a gap is possible); `min_id`:
  the items just above it (no gap), and it wins over `since_id`. Always newest first.
- `Link`: `rel="next"` first (`max_id` = the page's oldest), then `rel="prev"` (`min_id` = its
  newest), `limit` carried over when given; no header on an empty page."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Body, Reply
from app.api.mastodon import entities
from app.api.mastodon.params import flag_param, id_param, limit_param
from app.context import reading_strategy
from app.domain.oauth import require_scope
from app.domain.timeline_reads import read_above, read_page
from app.domain.users import Account
from app.strategies.contract import StatusView

HOME_PATH = "/api/v1/timelines/home"


async def home(request: Request, me: Account) -> Body | Reply:
    require_scope(me, "read:statuses")
    limit = limit_param(request)
    max_id = id_param(request, "max_id")
    since_id = id_param(request, "since_id")
    min_id = id_param(request, "min_id")
    ctx = context(request)
    strategy = await reading_strategy(ctx, me.id)
    revoked = ctx.store.revocations  # removals never lag here either (app.domain.timeline_reads)
    views: list[StatusView]
    if flag_param(request, "remote") or flag_param(request, "only_media"):
        views = []  # every status is local, and none has media
    elif min_id is not None:
        views = await read_above(revoked, strategy, me.id, limit=limit, above=min_id)
        if max_id is not None:
            views = [v for v in views if v.id < max_id]
    elif max_id is not None:
        views = (await read_page(revoked, strategy, me.id, limit=limit, before=max_id)).items
        if since_id is not None:
            views = [v for v in views if v.id > since_id]
    else:
        views = (await read_page(revoked, strategy, me.id, limit=limit, after=since_id)).items
    items = await entities.statuses(
        ctx, request, [(v.id, v.author, v.text, v.created_at) for v in views]
    )
    if not views:
        return items
    return Reply(items, 200, {"Link": _link(request, views[-1], views[0])})


def _link(request: Request, oldest: StatusView, newest: StatusView) -> str:
    carried = {"limit": request.query_params["limit"]} if "limit" in request.query_params else {}
    url = f"{entities.base_url(request)}{HOME_PATH}"
    after = urlencode({**carried, "max_id": str(oldest.id)})
    before = urlencode({**carried, "min_id": str(newest.id)})
    return f'<{url}?{after}>; rel="next", <{url}?{before}>; rel="prev"'
