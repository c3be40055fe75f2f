"""Friendship as Mastodon's locked accounts: a follow is a friend request, authorizing it makes
the (mutual) friendship, unfollow ends it. Over app.domain.friends, so every rule of friendship
(consent,
the friend limit, crossing requests, the worker's events) is the native API's."""

from __future__ import annotations

from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Body, Payload
from app.api.mastodon import entities
from app.api.mastodon.params import path_id
from app.domain import friends, users
from app.domain.errors import NotFound
from app.domain.oauth import require_scope
from app.domain.users import Account


async def _other(request: Request) -> Account:
    user = await users.by_id(context(request).store, path_id(request))
    if user is None:
        raise NotFound("Record not found")
    return user


async def follow(request: Request, me: Account) -> Payload:
    """A friend request (`requested: true`), or the friendship at once when they had asked."""
    require_scope(me, "write:follows")
    other = await _other(request)
    ctx = context(request)
    await friends.request(ctx, me, other.handle)
    return await entities.relationship_with(ctx, me, other.id)


async def unfollow(request: Request, me: Account) -> Payload:
    """Ends the friendship, or withdraws the caller's pending request; a request from them to
    the caller stays."""
    require_scope(me, "write:follows")
    other = await _other(request)
    ctx = context(request)
    await friends.unfriend(ctx, me, other.handle)
    if await ctx.store.friend_requests.find_one({"from_id": me.id, "to_id": other.id}, {"_id": 1}):
        await friends.withdraw(ctx, me, other.handle)
    return await entities.relationship_with(ctx, me, other.id)


async def follow_requests(request: Request, me: Account) -> Body:
    """Incoming requests, newest first (at most app.domain.friends.MAX_LISTED_REQUESTS, one
    page)."""
    require_scope(me, "read:follows")
    ctx = context(request)
    incoming = (await friends.pending(ctx, me))["incoming"]
    handles = [r["from"] for r in incoming]
    found = {
        d["handle"]: Account.from_doc(d)
        async for d in ctx.store.users.find({"handle": {"$in": handles}})
    }
    accounts = await entities.accounts(ctx, request, list(found.values()))
    return [accounts[found[h].id] for h in handles if h in found]


async def authorize(request: Request, me: Account) -> Payload:
    require_scope(me, "write:follows")
    other = await _other(request)
    ctx = context(request)
    try:
        await friends.accept(ctx, me, other.handle)
    except NotFound:
        raise NotFound("Record not found") from None
    return await entities.relationship_with(ctx, me, other.id)


async def reject(request: Request, me: Account) -> Payload:
    require_scope(me, "write:follows")
    other = await _other(request)
    ctx = context(request)
    pending = {"from_id": other.id, "to_id": me.id}
    if await ctx.store.friend_requests.find_one(pending, {"_id": 1}) is None:
        raise NotFound("Record not found")
    await friends.withdraw(ctx, me, other.handle)
    return await entities.relationship_with(ctx, me, other.id)
