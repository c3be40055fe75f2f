"""The event queue: the one owner of the `events` collection and its state machine.

- staged -> pending: its writer's change landed (`promote`; or the claim's `landed` check);
  staged -> deleted: it never will (`discard_staged`; `defer` after STAGED_CHECKS looks);
- pending -> pending and leased to a worker: `claim_oldest`, kept by `renew`;
- leased -> done (`complete`), -> dead (`park`), or back to pending after a delay (`fail` with
  backoff, `contended` uncounted, `hand_back` after an outage);
- dead -> pending: `retry_dead` (the operator).

An event is *not yet applied* while its state is `staged` or `pending` (NOT_DONE). A claimed
event stays `pending` with `lease_owner` and `lease_until` set; every write to a claimed event
is conditional on its `lease_owner` (a worker that lost it writes nothing), and every write to
it sets `lease_until` (the claim's filter relies on that). Which author a worker may take is
decided by the author leases (fanout.leases) and the worker; this module only moves events.
A `Queue` works on the `events` collection of one store (app.storage.store), handed to it at
construction; the typed event and the pure rules are in app.pipeline.queued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from bson import ObjectId

from app.domain import revocations
from app.domain.graph import Graph
from app.pipeline.queued import (
    NOT_DONE,
    STAGED_GRACE_S,
    QueuedEvent,
    QueueReader,
    from_doc,
    is_claimable,
    is_waiting,
)
from app.storage.db import Session
from app.storage.models import utcnow
from app.storage.store import Store

__all__ = ["MAX_ATTEMPTS", "MAX_CLAIMS", "STAGED_GRACE_S", "Queue", "QueuedEvent"]

log = logging.getLogger("timeline.queue")

# A staged event whose change has not landed is looked at again this long after each look.
STAGED_RECHECK_S = 30
# After this many looks (about STAGED_GRACE_S + STAGED_CHECKS * STAGED_RECHECK_S = 5.5
# minutes, far longer than any request: every database operation is bounded by
# app.storage.db.OPERATION_TIMEOUT_MS) the change is presumed never to land and its event is dropped
# unapplied. If the change lands after all, its writer records it again (app.pipeline.outbox).
STAGED_CHECKS = 10
# A poison event is parked after this many failed attempts (with backoff, ~2 minutes in all).
MAX_ATTEMPTS = 8
# An event claimed this often without ever finishing or failing kills (or stalls) its worker
# each time: park it rather than crash-loop every worker on it.
MAX_CLAIMS = 2 * MAX_ATTEMPTS
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
# Authors one candidate search returns at most: a worker serves each once before searching again.
CLAIM_CANDIDATES = 50
# An author's oldest waiting event is looked for among its oldest OLDEST_FIRST_LOOK not-done
# events (nearly always the first of them), then among this many (past young staged ones).
CANDIDATE_SCAN = 4 * CLAIM_CANDIDATES
# A candidate search reads this many of the oldest not-done events per query, and asks again,
# without every author seen so far, at most CANDIDATE_QUERIES times: one author's backlog fills
# a whole query (757 events in the probe of docs/security.md), and the authors behind it must
# still be found. Small queries: a busy author's backlog is not read 200 events per claim.
CANDIDATE_BATCH = CLAIM_CANDIDATES
CANDIDATE_QUERIES = 8
OLDEST_FIRST_LOOK = 8
# `last_error` keeps this much of an exception's repr: enough to diagnose, bounded so that a
# huge message cannot bloat the document.
ERROR_CHARS = 2000


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


class Queue:
    """The events of one store, and the source of truth their staged changes are checked
    against (`landed`). Its read-only views (counts, lists, backlogs) are `reader`."""

    def __init__(self, store: Store) -> None:
        self.events = store.events
        self.reader = QueueReader(store.events)
        self.statuses = store.statuses
        self.revocations = store.revocations
        self.graph = Graph(store)

    # -- recording (the writer's side; app.pipeline.outbox decides which)
    # --------------------------------
    async def insert(self, docs: list[dict[str, Any]], *, session: Session = None) -> None:
        """Insert `docs` (within `session`'s transaction if any); sets each doc's `_id`."""
        await self.events.insert_many(docs, session=session)

    async def promote(self, doc: dict[str, Any], now: datetime) -> None:
        """Staged → pending. An event no longer staged was applied by the worker (perhaps before
        its change was complete) or dropped: record it again, so that one is applied after it."""
        flipped = await self.events.update_one(
            {"_id": doc["_id"], "state": "staged"},
            {"$set": {"state": "pending", "lease_until": None}},
        )
        if flipped.matched_count == 0:
            again = {k: v for k, v in doc.items() if k not in ("_id", "state")}
            await self.events.insert_one({**again, "state": "pending", "created_at": now})

    async def discard_staged(self, ids: list[ObjectId]) -> None:
        """Delete those of `ids` still staged (their change never happened)."""
        await self.events.delete_many({"_id": {"$in": ids}, "state": "staged"})

    async def discard_one_staged(self, event_id: ObjectId) -> bool:
        """Delete a staged event whose change never landed, and the revocation record it
        carried (app.domain.revocations): nothing was removed, so nothing stays hidden."""
        dropped = await self.events.find_one_and_delete({"_id": event_id, "state": "staged"})
        if dropped is not None:
            await revocations.withdraw(self.revocations, dropped)
        return dropped is not None

    # -- the staged path's checks (the worker's side) -------------------------------------------
    async def landed(self, event: Mapping[str, Any]) -> bool:
        """Whether the change of a staged event is in the source of truth (durable:
        acknowledged)."""
        kind = event["kind"]
        if kind in ("status_posted", "status_deleted"):
            found = await self.statuses.find_one(
                {"author_id": event["author_id"], "_id": event["status_id"]}, {"_id": 1}
            )
            return bool((found is not None) == (kind == "status_posted"))
        if kind == "friendship_changed" and event.get("friends") is not None:
            friends = await self.graph.are_friends(event["author_id"], event["other_id"])
            return bool(friends == event["friends"])
        return True  # recorded without an outcome to check: applied (handlers reconcile)

    async def defer(self, event: Mapping[str, Any], now: datetime) -> None:
        """`event`'s change has not landed: look again later, or drop it unapplied."""
        checks = event.get("checks", 0) + 1
        if checks >= STAGED_CHECKS:
            if await self.discard_one_staged(event["_id"]):
                log.warning(
                    "dropped staged event %s (%s): its change never landed",
                    event["_id"],
                    event["kind"],
                )
            return
        await self.events.update_one(
            {"_id": event["_id"], "state": "staged"},
            {"$set": {"checks": checks, "lease_until": now + timedelta(seconds=STAGED_RECHECK_S)}},
        )

    # -- claiming -------------------------------------------------------------------------------
    async def candidates(self, now: datetime, busy: set[ObjectId]) -> list[ObjectId]:
        """Up to CLAIM_CANDIDATES distinct authors with a claimable event, none of them `busy`
        (held by other workers), in the order of their oldest claimable event. One author's
        backlog cannot hide the others: each further query (at most CANDIDATE_QUERIES in all)
        leaves out the authors already seen."""
        found: list[ObjectId] = []
        seen: set[ObjectId] = set(busy)
        # Busy authors are left out by the query itself, so that idle workers woken by a busy
        # author's every post do not read its backlog each time.
        excluded: set[ObjectId] = set(busy)
        for _ in range(CANDIDATE_QUERIES):
            flt: dict[str, Any] = dict(NOT_DONE)
            if excluded:
                # (author_id, state) holds both fields: the embedded server's planner uses it.
                flt["author_id"] = {"$nin": list(excluded)}
            cursor = (
                self.events.find(
                    flt, {"author_id": 1, "state": 1, "lease_until": 1, "created_at": 1}
                )
                .sort("_id", 1)
                .limit(CANDIDATE_BATCH)
            )
            docs = await cursor.to_list()
            for d in docs:
                author = d["author_id"]
                if author in seen or not is_waiting(d, now):
                    continue  # (a young staged event: the author's next one decides)
                seen.add(author)
                if is_claimable(d, now):
                    found.append(author)
                # else its oldest waiting event is leased or backing off: the author waits
            if len(found) >= CLAIM_CANDIDATES or len(docs) < CANDIDATE_BATCH:
                break
            # The scan was full: ask again without every author it held.
            excluded |= seen | {d["author_id"] for d in docs}
        return found[:CLAIM_CANDIDATES]

    async def _oldest_waiting(self, author: ObjectId, now: datetime) -> dict[str, Any] | None:
        """`author`'s oldest waiting event whose change has landed; staged ones that have not
        are deferred (or dropped) on the way."""
        flt = {"author_id": author, **NOT_DONE}
        for look in (OLDEST_FIRST_LOOK, CANDIDATE_SCAN):
            docs = await self.events.find(flt).sort("_id", 1).limit(look).to_list()
            for doc in [d for d in docs if is_waiting(d, now)]:
                if doc["state"] != "staged" or await self.landed(doc):
                    return cast(dict[str, Any], doc)
                await self.defer(doc, now)  # deferred or dropped: no longer waiting
            if len(docs) < look:
                break
        return None

    async def claim_oldest(
        self, author: ObjectId, owner: str, lease_s: float
    ) -> QueuedEvent | None:
        """Claim `author`'s oldest waiting event for `owner`, unless that one is backing off after
        a failure (then the author waits too: its events are applied in order). Called holding
        the author's lease; `started_at` is read now, after the lease was taken. A staged event
        is claimed only once its change has landed (`landed`; otherwise `defer`)."""
        now = utcnow()
        first = await self._oldest_waiting(author, now)
        if first is None:
            return None
        until = first.get("lease_until")
        if first["state"] == "pending" and until is not None and until >= now:
            return None
        claimed = {
            "state": "pending",
            "lease_until": now + timedelta(seconds=lease_s),
            "lease_owner": owner,
            "started_at": now,
        }
        # A conditional update_one, not find_one_and_update: the embedded server answers every
        # findAndModify with a scan of the whole collection (done events included: 130-170 ms
        # per claim at 10,000 events, against ~2-6 ms for this update). The claimed document is
        # `first` with this update applied: the filter guarantees nothing else changed it, as
        # every write to a claimed event (a renewal included) also sets `lease_until`.
        result = await self.events.update_one(
            {"_id": first["_id"], "state": first["state"], "lease_until": until},
            {"$set": claimed, "$inc": {"attempts": 1}},
        )
        if result.matched_count != 1:
            return None
        return from_doc({**first, **claimed, "attempts": first.get("attempts", 0) + 1})

    # -- a claimed event's transitions (each a no-op for an owner that lost the event) ----------
    async def renew(
        self,
        event_id: ObjectId,
        owner: str,
        until: datetime,
        resume_after: dict[str, ObjectId] | None = None,
    ) -> bool:
        """Extend `owner`'s lease on the event (and save `resume_after`, the progress of each
        strategy by name); False if it lost it."""
        sets: dict[str, Any] = {"lease_until": until}
        if resume_after is not None:
            sets["resume_after"] = resume_after
        result = await self.events.update_one(
            {"_id": event_id, "state": "pending", "lease_owner": owner}, {"$set": sets}
        )
        return bool(result.matched_count == 1)

    async def _leased_update(self, event_id: ObjectId, owner: str, update: dict[str, Any]) -> None:
        await self.events.update_one({"_id": event_id, "lease_owner": owner}, update)

    async def complete(self, event_id: ObjectId, owner: str) -> None:
        await self._leased_update(
            event_id, owner, {"$set": {"state": "done", "done_at": utcnow(), "lease_until": None}}
        )

    async def park(self, event_id: ObjectId, owner: str, error: str) -> None:
        """Dead: a poison event, left for `retry_dead` once its cause is fixed."""
        await self._leased_update(
            event_id,
            owner,
            {"$set": {"state": "dead", "last_error": error[:ERROR_CHARS], "lease_until": None}},
        )

    async def fail(self, event: QueuedEvent, owner: str, error: str) -> bool:
        """A failed attempt: retried after a backoff, or parked after MAX_ATTEMPTS. True if
        parked."""
        if event["attempts"] >= MAX_ATTEMPTS:
            await self.park(event["_id"], owner, error)
            return True
        retry_at = utcnow() + timedelta(seconds=backoff_s(event["attempts"]))
        await self._leased_update(
            event["_id"],
            owner,
            {
                "$set": {
                    "state": "pending",
                    "last_error": error[:ERROR_CHARS],
                    "lease_until": retry_at,
                }
            },
        )
        return False

    async def contended(self, event_id: ObjectId, owner: str, error: str, delay_s: float) -> None:
        """Retry after `delay_s`, and take back the claim's count: racing another handler is no
        fault of the event, so it must never make the event look like poison."""
        await self._leased_update(
            event_id,
            owner,
            {
                "$set": {
                    "state": "pending",
                    "last_error": error[:ERROR_CHARS],
                    "lease_until": utcnow() + timedelta(seconds=delay_s),
                },
                "$inc": {"attempts": -1},
            },
        )

    async def hand_back(self, event_id: ObjectId, owner: str, delay_s: float) -> None:
        """Let another claim take the event after `delay_s`, counting nothing against it."""
        await self._leased_update(
            event_id, owner, {"$set": {"lease_until": utcnow() + timedelta(seconds=delay_s)}}
        )

    # -- operators (the readers are QueueReader's) ----------------------------------------------
    async def retry_dead(self, ids: list[ObjectId] | None) -> int:
        """Re-queue dead events (all of them when `ids` is None) with a fresh attempt budget.
        `last_error` is kept for the record until the event succeeds or fails again."""
        flt: dict[str, Any] = {"state": "dead"}
        if ids is not None:
            flt["_id"] = {"$in": ids}
        result = await self.events.update_many(
            flt,
            {
                "$set": {
                    "state": "pending",
                    "attempts": 0,
                    "lease_until": None,
                    "lease_owner": None,
                },
                "$unset": {"resume_after": ""},
            },
        )
        return int(result.modified_count)
