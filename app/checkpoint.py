"""Progress of a long event handler, saved as it goes so that a crashed one resumes mid-way, and
the fence that stops a worker that lost its lease from writing.

The worker (fanout/) sets `current` while it applies an event; a handler that writes in batches
(receiver_copies' fan-out) skips what `resume_after` says is done and calls `save` after each
batch. Outside the worker (tests calling handlers directly, rebuilds) there is no checkpoint and
handlers simply do all the work. `save` also checks the event's lease in the database and raises
LeaseLost if it was taken over.

The fence proper is `fenced()`, around every derived-data write of a handler. The worker sets
`lease` to what it knows of its lease: valid until a local monotonic deadline that each renewal
moves on. Another worker can take the event over only once the lease's `until` has passed, and
the local deadline ends before it (by FENCE_MARGIN of the lease, for clock skew and the trip to
the server). A write is refused once the deadline has passed, and a write that starts before it
runs under a driver timeout ending there: the driver refuses to send a command after its
deadline (a stall between the check and the send is caught too) and sends the remaining time as
`maxTimeMS`. So a worker paused past its lease writes nothing after it resumes.

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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient

from app.db import OPERATION_TIMEOUT_MS, Session
from app.models import AuthorLease

T = TypeVar("T")

# The share of a lease that a worker does not use for writing: another worker's clock may run
# ahead of ours (leases compare wall clocks, fanout/leases.py), and a write sent just before our
# deadline still has to reach the server. Renewals come every third of a lease, so a live
# worker never gets near it.
FENCE_MARGIN = 0.2


class LeaseLost(Exception):
    """This worker no longer holds the event (it stalled past its lease); another one does."""


@dataclass(frozen=True)
class Checkpoint:
    resume_after: ObjectId | None
    save: Callable[[ObjectId], Awaitable[None]]


current: ContextVar[Checkpoint | None] = ContextVar("checkpoint", default=None)


@dataclass
class Lease:
    """What this worker knows of its lease on the event being applied (shared, mutable: the
    heartbeat moves `valid_until` on, and sets `lost` when a renewal finds it taken over)."""

    valid_until: float  # time.monotonic()
    lost: bool = False
    # The author lease document (`author_leases`) held, for `fenced_write`'s check in the
    # transaction; and whether the server has transactions at all.
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


@contextmanager
def fenced() -> Iterator[None]:
    """Around a derived-data write of a handler: LeaseLost if this worker's lease is over, else
    the write runs under a driver deadline that ends with the lease. A no-op outside the worker
    (API requests, `timeline rebuild`, tests calling handlers directly)."""
    held = lease.get()
    if held is None:
        yield
        return
    remaining = held.remaining_s()
    if remaining <= 0:
        raise LeaseLost("the lease ran out before a write")
    with pymongo.timeout(min(remaining, OPERATION_TIMEOUT_MS / 1000)):
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
    if held is None or not held.transactions or held.author_id is None:
        with fenced():
            return await write(None)
    author_id, owner = held.author_id, held.owner

    async def fenced_transaction(session: Session) -> T:
        mark = await AuthorLease.get_pymongo_collection().update_one(
            {"_id": author_id, "owner": owner}, {"$inc": {"fenced_writes": 1}}, session=session
        )
        if mark.matched_count != 1:
            held.lost = True
            raise LeaseLost("the author lease was taken over before a write")
        return await write(session)

    with fenced():
        async with client.start_session() as session:
            return await session.with_transaction(fenced_transaction)
