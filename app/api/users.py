"""POST /users, GET /users/{handle}, GET /me."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from app import users
from app.api.deps import current_user
from app.api.parsing import json_body
from app.api.schemas import CreateUser
from app.models import User
from app.timefmt import rfc3339


async def user_json(user: User) -> dict[str, object]:
    assert user.id is not None
    return {
        "id": str(user.id),
        "handle": user.handle,
        "display_name": user.display_name,
        "friend_count": await users.friend_count(user.id),
        "created_at": rfc3339(user.created_at),
    }


async def create_user(request: Request) -> JSONResponse:
    body = await json_body(request, CreateUser)
    user, token = await users.create_user(body.handle, body.display_name)
    return JSONResponse(
        {
            "id": str(user.id),
            "handle": user.handle,
            "display_name": user.display_name,
            "created_at": rfc3339(user.created_at),
            "token": token,
        },
        status_code=201,
    )


async def get_user(request: Request) -> JSONResponse:
    user = await users.by_handle(request.path_params["handle"])
    return JSONResponse(await user_json(user))


async def me(request: Request) -> JSONResponse:
    return JSONResponse(await user_json(await current_user(request)))
