"""Recording events in the same write path as the change they describe.

With transactions (replica sets, sharded clusters, the embedded server) events are inserted
`pending` inside the change's transaction: both commit or neither does.

Without transactions (a standalone mongod) `_staged` inserts them as `staged` *before* the
change, so that no crash can lose them, and a staged event is never applied before its change
has landed:
- the writer promotes its events to `pending` once its change is done. A change that fails
  before writing anything raises `NothingWritten` (a 404 accept, a friend limit) and its events
  are deleted. Any other failure with a definite outcome settles each event against the source
  of truth (`landed`): promoted if its change landed (a status inserted before a later step
  failed is published, and the retry of its Idempotency-Key returns it), deleted if not. A
  failure whose outcome is unknown (an outage, a timeout, a cancelled request: the server may
  still run the write) leaves them staged;
- the worker looks at a staged event left behind once it is STAGED_GRACE_S old and asks the
  source of truth whether its change landed (`landed`; these steps and their constants are in
  app.pipeline.queue): then it applies it; if not, it leaves
  it staged and looks again STAGED_RECHECK_S later (`defer`), and after STAGED_CHECKS looks it
  drops the event unapplied (the writer is presumed dead);
- a writer whose change lands after the worker took or dropped its event (a writer slower than
  the grace, or a clock skewed) finds the event no longer staged when it promotes, and records
  it again as `pending`: an application always follows the change.
Clocks only decide *when* the worker looks at a staged event, never whether it applies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from bson import ObjectId
from pymongo.errors import PyMongoError

from app.pipeline.queue import Queue
from app.pipeline.queued import new_docs
from app.storage.db import Database, Session, domain_error_from_pymongo
from app.storage.models import utcnow

T = TypeVar("T")


class NothingWritten(Exception):
    """Raised by a change that gives up before writing anything: its events are discarded.
    Subclass it for the caller to tell why."""


class Commit(Protocol):
    """The unit of work (`AppContext.commit`): apply `change` with its `events` so that neither
    is lost without the other, and wake this process's worker."""

    async def __call__(
        self, events: list[dict[str, Any]], change: Callable[[Session], Awaitable[T]]
    ) -> T: ...


def status_event(kind: str, author_id: ObjectId, status_id: ObjectId) -> dict[str, Any]:
    return {"kind": kind, "author_id": author_id, "status_id": status_id}


def friendship_events(a: ObjectId, b: ObjectId, *, friends: bool) -> list[dict[str, Any]]:
    """A friendship change is two author-keyed events: A's statuses towards B, and B's towards A.
    `friends` is the change's outcome, which says whether a staged event's change landed."""
    return [
        {"kind": "friendship_changed", "author_id": a, "other_id": b, "friends": friends},
        {"kind": "friendship_changed", "author_id": b, "other_id": a, "friends": friends},
    ]


async def record(queue: Queue, events: list[dict[str, Any]], *, session: Session) -> None:
    """Insert events as pending within `session`'s transaction."""
    await queue.insert(new_docs(events, "pending", utcnow()), session=session)


async def _promote(queue: Queue, docs: list[dict[str, Any]]) -> None:
    """Staged → pending, or recorded again if the worker took or dropped it (Queue.promote)."""
    for doc in docs:
        await queue.promote(doc, utcnow())


async def _settle(queue: Queue, docs: list[dict[str, Any]]) -> None:
    """After a change failed with a definite outcome: promote what landed, delete the rest."""
    for doc in docs:
        if await queue.landed(doc):
            await _promote(queue, [doc])
        else:
            await queue.discard_one_staged(doc["_id"])


def _outcome_unknown(exc: BaseException) -> bool:
    """A write may still land after this error: the server may be running it."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, PyMongoError) and domain_error_from_pymongo(exc) is not None


async def _staged(
    queue: Queue, events: list[dict[str, Any]], change: Callable[[Session], Awaitable[T]]
) -> T:
    """The no-transaction path: staged before the change, pending after it (module docstring)."""
    docs = new_docs(events, "staged", utcnow())
    await queue.insert(docs)  # sets each doc's _id
    try:
        result = await change(None)
    except NothingWritten:
        try:
            await queue.discard_staged([d["_id"] for d in docs])
        except PyMongoError:
            pass  # left staged: the worker finds that the change never landed, and drops it
        raise
    except BaseException as exc:
        if not _outcome_unknown(exc):
            try:
                await _settle(queue, docs)
            except PyMongoError:
                pass  # left staged: the worker settles them the same way
        raise
    await _promote(queue, docs)
    return result


async def commit_with_events(
    database: Database,
    queue: Queue,
    events: list[dict[str, Any]],
    change: Callable[[Session], Awaitable[T]],
) -> T:
    """Apply `change` and record `events` so that neither can be lost without the other."""
    if not events:
        return await database.in_transaction(change)
    if database.supports_transactions:

        async def both(session: Session) -> T:
            result = await change(session)
            await record(queue, events, session=session)
            return result

        return await database.in_transaction(both)
    return await _staged(queue, events, change)
