"""Friend requests and friendships. Friendship is mutual and needs the other side's consent."""

from __future__ import annotations

from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.context import AppContext
from app.domain import graph, revocations
from app.domain.errors import Conflict, NotFound, ValidationFailed
from app.domain.users import Account, by_handle, handles_by_id, id_of
from app.pipeline import outbox
from app.storage.db import Session
from app.storage.models import utcnow

# GET /friend-requests lists at most this many each way: a UI shows a handful, and it bounds
# the response size for an account that is spammed with requests.
MAX_LISTED_REQUESTS = 500
# A user may have at most this many outgoing requests pending: one account asking 999 strangers
# (the probe in docs/security.md) spams them all, and the list of one's own outgoing requests
# shows every one of them (MAX_LISTED_REQUESTS). A state the caller changes by cancelling
# requests, not by waiting: 409 `pending_limit`, not 429.
MAX_PENDING_OUTGOING = MAX_LISTED_REQUESTS


class _NoPendingRequest(outbox.NothingWritten):
    """Raised inside the friendship change to abort it, events included, when the request is
    gone: a failed accept must record nothing (no events for the worker to apply)."""


class _FriendLimit(outbox.NothingWritten):
    """Raised inside the friendship change when one side already has graph.MAX_FRIENDS."""


def _limit_reached() -> Conflict:
    return Conflict(f"a user may have at most {graph.MAX_FRIENDS} friends", code="friend_limit")


async def _befriend(ctx: AppContext, me: Account, them: Account, request_from: ObjectId) -> bool:
    """Turn the pending request `request_from` → other into a friendship. False: no such request.
    Conflict (friend_limit), the request left pending, when either side has graph.MAX_FRIENDS."""
    a, b = id_of(me), id_of(them)
    requests = ctx.store.friend_requests
    other = b if request_from == a else a
    pending_request = {"from_id": request_from, "to_id": other}

    async def change(session: Session) -> None:
        # Read first, so that a missing request is a 404 whoever is at the limit.
        if await requests.find_one(pending_request, {"_id": 1}, session=session) is None:
            raise _NoPendingRequest
        # Places are taken before anything else is written, so a refusal gives them back and
        # leaves no trace. Without a transaction a failure after this point leaves a place
        # taken: the count is then high, never low (graph.reserve).
        if not await ctx.graph.reserve(a, session=session):
            raise _FriendLimit
        if not await ctx.graph.reserve(b, session=session):
            await ctx.graph.unreserve(a, session=session)
            raise _FriendLimit
        # The edges before the request goes: without a transaction, a write that fails
        # between the two edges leaves the request pending, and accepting again completes
        # the friendship (the upserts are idempotent) instead of answering 404 for good.
        new_ab, new_ba = await ctx.graph.link(a, b, session=session)
        # An edge that existed already (a concurrent accept, or an earlier attempt that failed
        # half-way) holds its own place.
        if not new_ab:
            await ctx.graph.unreserve(a, session=session)
        if not new_ba:
            await ctx.graph.unreserve(b, session=session)
        # The request, and a crossing one the other way, are settled by the friendship. (In a
        # transaction a concurrent withdraw or accept of the request conflicts here, and the
        # retry finds it gone: 404.)
        await requests.delete_one(pending_request, session=session)
        await requests.delete_one({"from_id": other, "to_id": request_from}, session=session)
        # An earlier unfriend's settled records would hide each side from the other a little
        # longer (app.domain.revocations): the friendship ends that at once.
        await revocations.forget_friendship(
            ctx.store.revocations,
            [revocations.friend_key(a, them.handle), revocations.friend_key(b, me.handle)],
            session=session,
        )

    events = outbox.friendship_events(a, b, friends=True)
    try:
        await ctx.commit(events, change)
    except _NoPendingRequest:
        return False
    except _FriendLimit:
        raise _limit_reached() from None
    return True


async def request(
    ctx: AppContext, me: Account, to_handle: str
) -> tuple[Literal["pending", "accepted"], bool]:
    """Send a friend request. Returns (status, created)."""
    other = await by_handle(ctx.store, to_handle)
    my_id, other_id = id_of(me), id_of(other)
    if my_id == other_id:
        raise ValidationFailed("you cannot befriend yourself", code="self_request")
    if await ctx.graph.are_friends(my_id, other_id):
        return "accepted", False
    requests = ctx.store.friend_requests
    if await requests.find_one({"from_id": other_id, "to_id": my_id}, {"_id": 1}) and (
        await _befriend(ctx, me, other, request_from=other_id)
    ):
        return "accepted", False
    # Early refusal of a request that could not be accepted now; accepting checks again, and
    # that check is the atomic one (graph.reserve).
    for uid in (my_id, other_id):
        if await ctx.graph.friend_count(uid) >= graph.MAX_FRIENDS:
            raise _limit_reached()
    await _check_pending_limit(ctx, my_id, other_id)
    try:
        await requests.update_one(
            {"from_id": my_id, "to_id": other_id},
            {"$setOnInsert": {"from_id": my_id, "to_id": other_id, "created_at": utcnow()}},
            upsert=True,
        )
    except DuplicateKeyError:
        pass  # the same request sent twice at once
    # Requests crossing at the same moment: whoever sees both settles them.
    if await requests.find_one({"from_id": other_id, "to_id": my_id}, {"_id": 1}) and (
        await _befriend(ctx, me, other, request_from=other_id)
    ):
        return "accepted", False
    if await ctx.graph.are_friends(my_id, other_id):
        return "accepted", False
    return "pending", True


async def _check_pending_limit(ctx: AppContext, my_id: ObjectId, other_id: ObjectId) -> None:
    """Refuse a new request from a user with MAX_PENDING_OUTGOING pending (asking again for one
    already pending is no new request). Counted before the insert, not atomically with it:
    requests racing at the limit may pass it by as many as race, each one counted by the
    `friend_requests` rate limit (app.limits.ratelimit)."""
    requests = ctx.store.friend_requests
    if await requests.find_one({"from_id": my_id, "to_id": other_id}, {"_id": 1}) is not None:
        return
    pending = await requests.count_documents({"from_id": my_id}, limit=MAX_PENDING_OUTGOING)
    if pending >= MAX_PENDING_OUTGOING:
        raise Conflict(
            f"at most {MAX_PENDING_OUTGOING} friend requests may be pending: cancel some first",
            code="pending_limit",
        )


async def accept(ctx: AppContext, me: Account, from_handle: str) -> None:
    other = await by_handle(ctx.store, from_handle)
    if not await _befriend(ctx, me, other, request_from=id_of(other)):
        raise NotFound(f"no pending request from {from_handle!r}", code="request_not_found")


async def withdraw(ctx: AppContext, me: Account, handle: str) -> None:
    """Decline an incoming request or cancel an outgoing one; nothing pending is fine too."""
    other = await by_handle(ctx.store, handle)
    my_id, other_id = id_of(me), id_of(other)
    await ctx.store.friend_requests.delete_many(
        {"$or": [{"from_id": my_id, "to_id": other_id}, {"from_id": other_id, "to_id": my_id}]}
    )


async def pending(ctx: AppContext, me: Account) -> dict[str, list[dict[str, Any]]]:
    coll = ctx.store.friend_requests
    my_id = id_of(me)
    incoming = await coll.find({"to_id": my_id}).sort("created_at", -1).to_list(MAX_LISTED_REQUESTS)
    outgoing = (
        await coll.find({"from_id": my_id}).sort("created_at", -1).to_list(MAX_LISTED_REQUESTS)
    )
    users = await handles_by_id(
        ctx.store, [r["from_id"] for r in incoming] + [r["to_id"] for r in outgoing]
    )
    return {
        "incoming": [
            {"from": users[r["from_id"]].handle, "created_at": r["created_at"]}
            for r in incoming
            if r["from_id"] in users
        ],
        "outgoing": [
            {"to": users[r["to_id"]].handle, "created_at": r["created_at"]}
            for r in outgoing
            if r["to_id"] in users
        ],
    }


async def list_friends(
    ctx: AppContext, me: Account, limit: int, before: ObjectId | None
) -> tuple[list[dict[str, Any]], ObjectId | None]:
    """A page of friends, most recent friendship first; returns (items, next edge id)."""
    flt: dict[str, Any] = {"user_id": id_of(me)}
    if before is not None:
        flt["_id"] = {"$lt": before}
    edges = await ctx.store.friendships.find(flt).sort("_id", -1).limit(limit + 1).to_list()
    more = len(edges) > limit
    edges = edges[:limit]
    users = await handles_by_id(ctx.store, [e["friend_id"] for e in edges])
    items = [
        {
            "handle": users[e["friend_id"]].handle,
            "display_name": users[e["friend_id"]].display_name,
            "since": e["since"],
        }
        for e in edges
        if e["friend_id"] in users
    ]
    return items, (edges[-1]["_id"] if more and edges else None)


async def unfriend(ctx: AppContext, me: Account, handle: str) -> None:
    other = await by_handle(ctx.store, handle)
    a, b = id_of(me), id_of(other)
    # Either edge: without a transaction an earlier unfriend may have failed between the two,
    # and this one removes the other.
    if a == b or not (await ctx.graph.are_friends(a, b) or await ctx.graph.are_friends(b, a)):
        return  # idempotent: nothing to end

    # Each side stops seeing the other's statuses from the commit on, whatever the worker's
    # state (app.domain.revocations); the event of `author`'s statuses towards `reader` settles it.
    rev = ObjectId()
    keys = {a: revocations.friend_key(b, me.handle), b: revocations.friend_key(a, other.handle)}

    async def change(session: Session) -> None:
        await revocations.revoke(
            ctx.store.revocations, [(k, rev) for k in keys.values()], session=session
        )
        await ctx.graph.unlink(a, b, session=session)

    events = [
        revocations.stamped(e, keys[e["author_id"]], rev)
        for e in outbox.friendship_events(a, b, friends=False)
    ]
    await ctx.commit(events, change)
