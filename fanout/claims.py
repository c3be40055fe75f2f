"""How a worker finds its next event. Claiming is two leases (fanout.leases has the argument
for the first):
1. the *author* lease: only one worker at a time applies events of one author (the handlers
   are written for that); events of different authors run in parallel on different workers;
2. the *event* lease (`lease_owner`, `lease_until` on the event): holding the author lease, the
   worker takes that author's oldest waiting event, so each author's events run in `_id` order.

One candidate query serves many claims (Queue.candidates), and the author of the event just
applied is kept when more of its events were among the candidates, so a busy author's events
are taken without a new search."""

from __future__ import annotations

from collections import deque

from bson import ObjectId

from app.models import utcnow
from app.queue import Queue, QueuedEvent
from fanout.leases import AuthorLeases


class Claims:
    """The claiming state of one worker (`owner`): the author it kept, and the candidates."""

    def __init__(self, events: Queue, leases: AuthorLeases, owner: str, lease_s: float) -> None:
        self.events = events
        self.leases = leases
        self.owner = owner
        self.lease_s = lease_s
        # The author whose lease this worker kept after an event, to take its next one cheaply.
        self.held: ObjectId | None = None
        # Authors of the claimable events the last candidate query found, one entry per event,
        # oldest first, minus those claimed since (see `_candidates`).
        self.queue: deque[ObjectId] = deque()

    async def claim(self) -> QueuedEvent | None:
        """Lease an author no one else holds and claim that author's oldest waiting event."""
        if self.held is not None:
            author, self.held = self.held, None
            if await self.leases.renew(author, self.owner, utcnow(), self.lease_s):
                event = await self.events.claim_oldest(author, self.owner, self.lease_s)
                if event is not None:
                    self._forget(author, 1)
                    return event
            self._forget(author)
            await self.leases.release(author, self.owner)
        refreshed = False
        while True:
            if not self.queue:
                if refreshed:
                    return None
                self.queue = deque(await self._candidates())
                refreshed = True
                if not self.queue:
                    return None
            author = self.queue.popleft()
            # A fresh clock reading: the queue may have been read a while ago.
            if not await self.leases.acquire(author, self.owner, utcnow(), self.lease_s):
                self._forget(author)  # another worker holds it: it applies those events
                continue
            event = await self.events.claim_oldest(author, self.owner, self.lease_s)
            if event is not None:
                return event
            self._forget(author)
            await self.leases.release(author, self.owner)

    async def _candidates(self) -> list[ObjectId]:
        """The authors of the oldest claimable events that no other worker holds (queue.
        candidates). One query serves up to CLAIM_CANDIDATES claims: a claim re-checks everything
        it relies on (the author's lease, then the author's oldest waiting event), so an entry
        made stale by another worker only costs a failed lease or an empty look."""
        now = utcnow()
        busy = set(await self.leases.held(now, by_others_than=self.owner))
        return await self.events.candidates(now, busy)

    def _forget(self, author: ObjectId, n: int | None = None) -> None:
        """Drop `n` (default: all) of `author`'s entries from the candidate queue."""
        kept: deque[ObjectId] = deque()
        for a in self.queue:
            if a == author and (n is None or n > 0):
                n = None if n is None else n - 1
                continue
            kept.append(a)
        self.queue = kept

    async def applied(self, author: ObjectId) -> None:
        """After one of `author`'s events was applied: keep its lease if more of its events
        were waiting when last looked, else free it now (saving two round trips)."""
        if author in self.queue:
            self.held = author  # its next event is taken without a new search
        else:
            await self.leases.release(author, self.owner)

    async def release_held(self) -> None:
        if self.held is not None:
            author, self.held = self.held, None
            await self.leases.release(author, self.owner)
