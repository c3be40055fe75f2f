"""Friend requests and friends."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import cursors, friends
from app.api.deps import context, current_user
from app.api.parsing import cursor_param, json_body, limit_param
from app.api.schemas import CreateFriendRequest
from app.timefmt import rfc3339


async def send_request(request: Request) -> JSONResponse:
    me = await current_user(request)
    body = await json_body(request, CreateFriendRequest)
    status, created = await friends.request(context(request), me, body.to)
    return JSONResponse(
        {"from": me.handle, "to": body.to, "status": status}, status_code=201 if created else 200
    )


async def list_requests(request: Request) -> JSONResponse:
    me = await current_user(request)
    lists = await friends.pending(me)
    for items in lists.values():
        for item in items:
            item["created_at"] = rfc3339(item["created_at"])
    return JSONResponse(lists)


async def accept_request(request: Request) -> JSONResponse:
    me = await current_user(request)
    await friends.accept(context(request), me, request.path_params["handle"])
    return JSONResponse({"status": "accepted"})


async def delete_request(request: Request) -> Response:
    me = await current_user(request)
    await friends.withdraw(me, request.path_params["handle"])
    return Response(status_code=204)


async def list_friends(request: Request) -> JSONResponse:
    me = await current_user(request)
    limit = limit_param(request)
    items, more = await friends.list_friends(me, limit, cursor_param(request, "cursor"))
    for item in items:
        item["since"] = rfc3339(item["since"])
    return JSONResponse(
        {"items": items, "next_cursor": cursors.encode(more) if more is not None else None}
    )


async def unfriend(request: Request) -> Response:
    me = await current_user(request)
    await friends.unfriend(context(request), me, request.path_params["handle"])
    return Response(status_code=204)
