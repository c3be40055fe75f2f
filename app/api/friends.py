"""Friend requests and friends."""

from __future__ import annotations

from starlette.requests import Request

from app import cursors
from app.api.deps import context
from app.api.endpoint import Payload, Reply
from app.api.parsing import cursor_param, json_body, limit_param
from app.api.schemas import CreateFriendRequest
from app.domain import friends
from app.domain.users import Account
from app.timefmt import rfc3339


async def send_request(request: Request, me: Account) -> Payload | Reply:
    body = await json_body(request, CreateFriendRequest)
    status, created = await friends.request(context(request), me, body.to)
    payload = {"from": me.handle, "to": body.to, "status": status}
    return payload if created else Reply(payload, 200)


async def list_requests(request: Request, me: Account) -> Payload:
    lists = await friends.pending(context(request), me)
    for items in lists.values():
        for item in items:
            item["created_at"] = rfc3339(item["created_at"])
    return lists


async def accept_request(request: Request, me: Account) -> Payload:
    await friends.accept(context(request), me, request.path_params["handle"])
    return {"status": "accepted"}


async def delete_request(request: Request, me: Account) -> None:
    await friends.withdraw(context(request), me, request.path_params["handle"])


async def list_friends(request: Request, me: Account) -> Payload:
    limit = limit_param(request)
    items, more = await friends.list_friends(
        context(request), me, limit, cursor_param(request, "cursor")
    )
    for item in items:
        item["since"] = rfc3339(item["since"])
    return {"items": items, "next_cursor": cursors.encode(more) if more is not None else None}


async def unfriend(request: Request, me: Account) -> None:
    await friends.unfriend(context(request), me, request.path_params["handle"])
