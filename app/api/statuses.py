"""Statuses: post (with Idempotency-Key), read, delete, an author's statuses."""

from __future__ import annotations

from starlette.requests import Request

from app import cursors
from app.api.deps import context
from app.api.endpoint import Payload, Reply
from app.api.parsing import cursor_param, idempotency_key, json_body, limit_param
from app.api.schemas import CreateStatus
from app.domain import statuses
from app.domain.users import Account


async def post_status(request: Request, me: Account) -> Payload | Reply:
    key = idempotency_key(request)
    body = await json_body(request, CreateStatus)
    status, created = await statuses.post(context(request), me, body.text, key)
    return status if created else Reply(status, 200)


async def get_status(request: Request, me: Account) -> Payload:
    return await statuses.get(context(request), me, request.path_params["id"])


async def delete_status(request: Request, me: Account) -> None:
    await statuses.delete(context(request), me, request.path_params["id"])


async def user_statuses(request: Request, me: Account) -> Payload:
    limit = limit_param(request)
    before = cursor_param(request, "before")
    handle = request.path_params["handle"]
    items, more = await statuses.by_author(context(request), me, handle, limit, before)
    return {"items": items, "next_cursor": cursors.encode(more) if more is not None else None}
