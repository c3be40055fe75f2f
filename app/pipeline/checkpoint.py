"""Progress of a long event handler, saved as it goes so that a crashed one resumes mid-way, and
the fence that stops a worker that lost its lease from writing.

The worker (fanout/) sets `current` while it applies an event, one checkpoint per strategy it
maintains (each resumes from its own progress: the event's `resume_after` maps strategy names to
the last receiver done); a handler that writes in batches (receiver_copies' fan-out) skips what
`resume_after` says is done and calls `save` after each batch. Outside the worker (tests calling
handlers directly, rebuilds) there is no checkpoint and handlers simply do all the work. `save`
also checks the event's lease in the database and raises LeaseLost if it was taken over.

The fence proper is `fenced()`, around every derived-data write of a handler. The worker sets
`lease` to what it knows of its lease: valid until a local monotonic deadline that each renewal
moves on. Another worker can take the event over only once the lease's `until` has passed, and
the local deadline ends before it (by FENCE_MARGIN of the lease, for clock skew and the trip to
the server). A write is refused once the deadline has passed, and a write that starts before it
runs under a driver timeout ending there: the driver refuses to send a command after its
deadline (a stall between the check and the send is caught too) and sends the remaining time as
`maxTimeMS` (for plain writes, only where the lease is long enough: see `fenced`). So a worker
paused past its lease writes nothing after it resumes.

`fenced_write()` goes further where the server has transactions: the write runs in a
transaction that first writes to this worker's author lease document, so it commits only if
the lease is still this worker's, atomically (a takeover writes that document too: one of the
two fails). It also keeps a write from lingering in the server: the embedded server retries a
plain write that meets a transaction's uncommitted write until that transaction ends, even after
the client gave up (its `maxTimeMS` does not stop that retry), so the write could land after the
lease; in a transaction the conflict surfaces at once and the driver retries it, within the
deadline. recipients_embedded writes statuses this way: the API's transactions write them too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient

from app.storage.db import OPERATION_TIMEOUT_MS, Session
from app.storage.store import Collection

T = TypeVar("T")

# The share of a lease that a worker does not use for writing: another worker's clock may run
# ahead of ours (leases compare wall clocks, fanout/leases.py), and a write sent just before our
# deadline still has to reach the server. Renewals come every third of a lease, so a live
# worker never gets near it.
FENCE_MARGIN = 0.2
# A write is sent with the lease's remaining time as its deadline (server time included), so it
# must not start with too little of it: below this share of a lease, the write renews first.
# Half a lease: a write gets at least that long, at the cost of an extra renewal now and then
# (the heartbeat renews every third of a lease, so the remaining share is mostly 0.5 to 0.8).
FENCE_RENEW_BELOW = 0.5


class LeaseLost(Exception):
    """This worker no longer holds the event (it stalled past its lease); another one does."""


@dataclass(frozen=True)
class Checkpoint:
    resume_after: ObjectId | None
    save: Callable[[ObjectId], Awaitable[None]]


current: ContextVar[Checkpoint | None] = ContextVar("checkpoint", default=None)


def progress_of(saved: object) -> dict[str, ObjectId]:
    """The per-strategy progress saved on an event (`resume_after`). Anything else (a single id
    saved before progress was kept per strategy, which cannot say whose it was) resumes nothing:
    the handlers redo the work, idempotently."""
    if not isinstance(saved, dict):
        return {}
    return {k: v for k, v in saved.items() if isinstance(k, str) and isinstance(v, ObjectId)}


@dataclass
class Lease:
    """What this worker knows of its lease on the event being applied (shared, mutable: the
    heartbeat moves `valid_until` on, and sets `lost` when a renewal finds it taken over)."""

    valid_until: float  # time.monotonic()
    lost: bool = False
    lease_s: float = 0.0
    # Renews the lease now (False: it was taken over); the worker's heartbeat does it every
    # third of a lease, and `fenced()` when a write finds little of the lease left.
    renew: Callable[[], Awaitable[bool]] | None = None
    # The author lease document held and the store's `author_leases` collection it is in, for
    # `fenced_write`'s check in the transaction; and whether the server has transactions.
    author_leases: Collection | None = None
    author_id: ObjectId | None = None
    owner: str | None = None
    transactions: bool = False

    def renewed(self, sent_at: float, lease_s: float) -> None:
        """A renewal sent at `sent_at` (monotonic, read before its `until` was computed) went
        through."""
        self.valid_until = max(self.valid_until, sent_at + lease_s * (1 - FENCE_MARGIN))

    def remaining_s(self) -> float:
        return 0.0 if self.lost else self.valid_until - time.monotonic()


lease: ContextVar[Lease | None] = ContextVar("lease", default=None)


@asynccontextmanager
async def fenced(*, within_lease: bool = False) -> AsyncIterator[None]:
    """Around a derived-data write of a handler: LeaseLost if this worker's lease is over, else
    the write runs under a driver deadline. A no-op outside the worker (API requests,
    `timeline rebuild`, tests calling handlers directly).

    A write that finds less than FENCE_RENEW_BELOW of a lease left (the heartbeat is due, or a
    busy event loop or database delayed it) renews the lease first; a lease that is gone by
    then is not renewed (the renewal matches only this worker's).

    The deadline is the operation timeout, capped by the lease only `within_lease`
    (transactional writes, `fenced_write`). With the default 30 s lease that changes nothing:
    a write starts with at least 15 s of lease left, the operation timeout. With a much shorter
    lease, capping plain writes made them fail for good on a busy embedded server: a plain
    write that waits on a conflict keeps running in that server after its client gave up
    (`maxTimeMS` does not stop that wait), and the retries piled up behind the abandoned
    writes (tests/test_worker_crash.py, with 1 to 3 s leases). So with a lease under twice the
    operation timeout, a plain write sent just before a stall could still land after the
    lease; the check before sending it stands either way."""
    held = lease.get()
    if held is None:
        yield
        return
    if held.renew is not None and held.remaining_s() < held.lease_s * FENCE_RENEW_BELOW:
        await held.renew()
    remaining = held.remaining_s()
    if remaining <= 0:
        raise LeaseLost("the lease ran out before a write")
    operation_s = OPERATION_TIMEOUT_MS / 1000
    with pymongo.timeout(min(remaining, operation_s) if within_lease else operation_s):
        yield


async def fenced_write(
    client: AsyncMongoClient[Any], write: Callable[[Session], Awaitable[T]]
) -> T:
    """Run `write(session)` (derived-data writes) fenced: in a transaction that first checks, by
    writing to it, that the author lease is still this worker's, where the server has
    transactions and the caller holds a lease; else under `fenced()` alone, with no session.
    Write conflicts then surface at once and `with_transaction` retries them until the lease's
    deadline. `write` may run more than once: it must be idempotent."""
    held = lease.get()
    if (
        held is None
        or not held.transactions
        or held.author_id is None
        or held.author_leases is None
    ):
        async with fenced():
            return await write(None)
    author_id, owner, leases = held.author_id, held.owner, held.author_leases

    async def fenced_transaction(session: Session) -> T:
        mark = await leases.update_one(
            {"_id": author_id, "owner": owner}, {"$inc": {"fenced_writes": 1}}, session=session
        )
        if mark.matched_count != 1:
            held.lost = True
            raise LeaseLost("the author lease was taken over before a write")
        return await write(session)

    async with fenced(within_lease=True), client.start_session() as session:
        return await session.with_transaction(fenced_transaction)
