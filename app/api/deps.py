"""Per-request access to the app context and the caller."""

from __future__ import annotations

from starlette.requests import Request

from app.context import AppContext
from app.domain.errors import Unauthorized
from app.domain.users import Account, TokenCache

# Tokens are ~43 characters; anything much longer is not ours and is not worth hashing.
MAX_TOKEN_CHARS = 512


def context(request: Request) -> AppContext:
    ctx: AppContext = request.state.ctx
    return ctx


def tokens(request: Request) -> TokenCache:
    """This process's remembered token look-ups (app.domain.users.TokenCache; the lifespan makes
    it)."""
    cache: TokenCache = request.state.tokens
    return cache


async def current_user(request: Request) -> Account:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send Authorization: Bearer <token>", code="missing_token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the bearer token is invalid", code="invalid_token")
    return await tokens(request).authenticate(context(request).store, token)
