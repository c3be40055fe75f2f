"""Statuses: post (with Idempotency-Key), read, delete, an author's statuses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import cursors, statuses, users
from app.api.deps import context, current_user
from app.api.parsing import cursor_param, idempotency_key, json_body, limit_param
from app.api.schemas import CreateStatus


async def post_status(request: Request) -> JSONResponse:
    me = await current_user(request)
    key = idempotency_key(request)
    body = await json_body(request, CreateStatus)
    status, created = await statuses.post(context(request), me, body.text, key)
    return JSONResponse(status, status_code=201 if created else 200)


async def get_status(request: Request) -> JSONResponse:
    me = await current_user(request)
    return JSONResponse(await statuses.get(me, request.path_params["id"]))


async def delete_status(request: Request) -> Response:
    me = await current_user(request)
    await statuses.delete(context(request), me, request.path_params["id"])
    return Response(status_code=204)


async def user_statuses(request: Request) -> JSONResponse:
    me = await current_user(request)
    limit = limit_param(request)
    before = cursor_param(request, "before")
    author = await users.by_handle(request.path_params["handle"])
    items, more = await statuses.by_author(me, author, limit, before)
    return JSONResponse(
        {"items": items, "next_cursor": cursors.encode(more) if more is not None else None}
    )
