"""POST /users, GET /users/{handle}, GET /me."""

from __future__ import annotations

from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.api.parsing import json_body
from app.api.schemas import CreateUser
from app.domain import users
from app.domain.users import Account
from app.storage.store import Store
from app.timefmt import rfc3339


async def user_json(store: Store, user: Account) -> Payload:
    return {
        "id": str(user.id),
        "handle": user.handle,
        "display_name": user.display_name,
        "friend_count": await users.friend_count(store, user.id),
        "created_at": rfc3339(user.created_at),
    }


async def create_user(request: Request) -> Payload:
    body = await json_body(request, CreateUser)
    user, token = await users.create_user(context(request).store, body.handle, body.display_name)
    return {
        "id": str(user.id),
        "handle": user.handle,
        "display_name": user.display_name,
        "created_at": rfc3339(user.created_at),
        "token": token,
    }


async def get_user(request: Request) -> Payload:
    store = context(request).store
    return await user_json(store, await users.by_handle(store, request.path_params["handle"]))


async def me(request: Request, me: Account) -> Payload:
    return await user_json(context(request).store, me)
