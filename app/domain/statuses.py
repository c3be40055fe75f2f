"""Posting, reading and deleting statuses; `Idempotency-Key` handling."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.context import AppContext
from app.cursors import parse_id
from app.domain import revocations
from app.domain.errors import Conflict, NotFound, ValidationFailed
from app.domain.users import Account, id_of, user_not_found
from app.pipeline import outbox
from app.storage.db import Session
from app.storage.models import utcnow
from app.storage.store import Collection
from app.strategies.contract import Contention
from app.timefmt import rfc3339

log = logging.getLogger("timeline.statuses")

# A request holding an Idempotency-Key longer than this is presumed dead (its process crashed
# between claiming the key and committing); a retry may then take the key over.
IN_FLIGHT_STALE_S = 30
# Looked up in place of a status's author or a user that does not exist, so that a missing
# status or user costs the same lookups as one the caller may not see (an id no document has:
# ObjectIds begin with their creation time).
NOBODY = ObjectId("0" * 24)


def status_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        "author": doc["author"],
        "text": doc["text"],
        "created_at": rfc3339(doc["created_at"]),
    }


async def _claim_key(
    coll: Collection, user_id: ObjectId, key: str, body_hash: str, status_id: ObjectId
) -> tuple[dict[str, Any] | None, ObjectId]:
    """Claim the key for this request. Returns (a stored response to replay, None) or (None, the
    id of the status to create). The key is bound to that id when first claimed, so that every
    attempt with the key creates (or finishes) the same status, never a second one. `coll` is
    the store's `idempotency_keys`."""
    now = utcnow()
    try:
        await coll.insert_one(
            {
                "user_id": user_id,
                "key": key,
                "body_hash": body_hash,
                "state": "in_flight",
                "status_id": status_id,
                "response": None,
                "created_at": now,
            }
        )
        return None, status_id
    except DuplicateKeyError:
        pass
    rec = await coll.find_one({"user_id": user_id, "key": key})
    if rec is None:  # expired between the two calls: claim again
        return await _claim_key(coll, user_id, key, body_hash, status_id)
    if rec["body_hash"] != body_hash:
        raise ValidationFailed(
            "this Idempotency-Key was used with a different body", code="idempotency_key_reused"
        )
    if rec["state"] == "done":
        return dict(rec["response"]), rec["status_id"]
    created = rec["created_at"]
    # Released by a request that failed, or held by one presumed dead: take it over (one
    # taker wins the conditional update), keeping the status id it is bound to.
    if rec.get("released") or created < now - timedelta(seconds=IN_FLIGHT_STALE_S):
        bound = rec.get("status_id") or status_id
        taken = await coll.update_one(
            {
                "_id": rec["_id"],
                "state": "in_flight",
                "created_at": created,
                "released": rec.get("released"),
            },
            {"$set": {"created_at": now, "released": False, "status_id": bound}},
        )
        if taken.modified_count == 1:
            return None, bound
    raise _in_flight()


def _in_flight() -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still in progress", code="idempotency_in_flight"
    )


async def _release_key(keys: Collection, user_id: ObjectId, key: str) -> None:
    """Release the key of a post that failed, so that the client's retry is not answered 409
    until it goes stale; the retry finishes the status (same id) if it was inserted. Best
    effort: an unreleased key goes stale after IN_FLIGHT_STALE_S."""
    try:
        await keys.update_one(
            {"user_id": user_id, "key": key, "state": "in_flight"}, {"$set": {"released": True}}
        )
    except Exception:
        pass


async def post(
    ctx: AppContext, me: Account, text: str, idempotency_key: str | None
) -> tuple[dict[str, Any], bool]:
    """Create a status. Returns (status object, created); created is False for a replay."""
    user_id = id_of(me)
    keys = ctx.store.idempotency_keys
    statuses = ctx.store.statuses
    status_id = ObjectId()
    existing: dict[str, Any] | None = None
    if idempotency_key is not None:
        body_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        replay, status_id = await _claim_key(keys, user_id, idempotency_key, body_hash, status_id)
        if replay is not None:
            return replay, False
        # Without transactions an earlier attempt may have inserted the status and failed
        # after: this attempt finishes it instead of creating a second one.
        existing = await statuses.find_one(
            {"author_id": user_id, "_id": status_id}, {"audience": 0}
        )
    status: dict[str, Any] = existing or {
        "_id": status_id,
        "author_id": user_id,
        "author": me.handle,
        "text": text,
        "created_at": utcnow(),
    }
    response = status_json(status)
    strategy = ctx.strategy

    async def change(session: Session) -> None:
        doc = dict(status)
        if existing is None:
            await strategy.prepare_status(doc, session=session)
            await statuses.insert_one(doc, session=session)
            await strategy.status_created(doc, session=session)
        else:
            try:
                await strategy.status_created(doc, session=session)
            except DuplicateKeyError:
                pass  # the earlier attempt got that far too
        if idempotency_key is not None:
            await keys.update_one(
                {"user_id": user_id, "key": idempotency_key},
                {"$set": {"state": "done", "status_id": status["_id"], "response": response}},
                session=session,
            )

    events = [outbox.status_event("status_posted", user_id, status["_id"])]
    try:
        await ctx.commit(events, change)
    except DuplicateKeyError:
        if idempotency_key is None:
            raise
        raise _in_flight() from None  # another attempt with this key inserted it meanwhile
    except BaseException:
        if idempotency_key is not None:
            await _release_key(keys, user_id, idempotency_key)
        raise
    await _after(strategy.after_post(status))
    return response, True


async def _after(step: Awaitable[None]) -> None:
    """A strategy's step after a committed change (`after_post`, `after_delete`). The change
    and its event are durable, so a failure here only delays what the worker does anyway: it
    is logged, and the reply still says what was committed (a 5xx would make the client retry
    a write that succeeded)."""
    try:
        await step
    except (PyMongoError, Contention):
        log.warning("a step after commit failed; the worker will catch up", exc_info=True)


async def _visible(ctx: AppContext, me: Account, status_id: str) -> dict[str, Any]:
    """The status, if `me` may see it. Not yours and not a friend's: the same 404 as a missing
    id, after the same lookups (the status, then a friendship edge), so that neither the answer
    nor its time tells whether the id exists."""
    oid = parse_id(status_id)
    doc = await ctx.store.statuses.find_one({"_id": oid or NOBODY}, {"audience": 0})
    visible = await ctx.graph.can_see(id_of(me), doc["author_id"] if doc else NOBODY)
    if doc is None or not visible:
        raise NotFound("no such status", code="status_not_found")
    return dict(doc)


async def get(ctx: AppContext, me: Account, status_id: str) -> dict[str, Any]:
    return status_json(await _visible(ctx, me, status_id))


async def _own(ctx: AppContext, me: Account, status_id: str) -> dict[str, Any]:
    """The caller's own status. Looked up with its author, the shard key of `statuses`, so that
    on a sharded cluster a delete asks one shard (docs/scaling.md); a friend's status gets the
    same 404 as a missing id, as before."""
    oid = parse_id(status_id)
    doc = None
    if oid is not None:
        doc = await ctx.store.statuses.find_one(
            {"author_id": id_of(me), "_id": oid}, {"audience": 0}
        )
    if doc is None:
        raise NotFound("no such status", code="status_not_found")
    return dict(doc)


async def delete(ctx: AppContext, me: Account, status_id: str) -> None:
    doc = await _own(ctx, me, status_id)
    strategy = ctx.strategy
    # Hidden from every read from the commit on, whatever the worker's state
    # (app.domain.revocations).
    key, rev = revocations.status_key(doc["_id"]), ObjectId()

    async def change(session: Session) -> None:
        await revocations.revoke(ctx.store.revocations, [(key, rev)], session=session)
        # A key still bound to this status in flight (its post failed after inserting it,
        # without a transaction) is settled first: a retry then replays the post instead of
        # inserting the deleted status again.
        await ctx.store.idempotency_keys.update_many(
            {"user_id": doc["author_id"], "status_id": doc["_id"], "state": "in_flight"},
            {"$set": {"state": "done", "response": status_json(doc)}},
            session=session,
        )
        await ctx.store.statuses.delete_one(
            {"author_id": doc["author_id"], "_id": doc["_id"]}, session=session
        )
        await strategy.status_deleted(doc, session=session)

    event = outbox.status_event("status_deleted", doc["author_id"], doc["_id"])
    await ctx.commit([revocations.stamped(event, key, rev)], change)
    await _after(strategy.after_delete(doc))


async def by_author(
    ctx: AppContext, me: Account, handle: str, limit: int, before: ObjectId | None
) -> tuple[list[dict[str, Any]], ObjectId | None]:
    """A page of `handle`'s statuses, for the user and their friends. To anyone else the same
    404 as an unknown handle, after the same lookups (the user, then a friendship edge)."""
    found = await ctx.store.users.find_one({"handle": handle}, {"_id": 1})
    author_id = found["_id"] if found else NOBODY
    visible = await ctx.graph.can_see(id_of(me), author_id)
    if found is None or not visible:
        raise user_not_found(handle)
    flt: dict[str, Any] = {"author_id": author_id}
    if before is not None:
        flt["_id"] = {"$lt": before}
    docs = (
        await ctx.store.statuses.find(flt, {"audience": 0})
        .sort("_id", -1)
        .limit(limit + 1)
        .to_list()
    )
    more = len(docs) > limit
    docs = docs[:limit]
    return [status_json(d) for d in docs], (docs[-1]["_id"] if more and docs else None)
