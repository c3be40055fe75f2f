"""How a worker finds its next event. Claiming is two leases (fanout.leases has the argument
for the first):
1. the *author* lease: only one worker at a time applies events of one author (the handlers
   are written for that); events of different authors run in parallel on different workers;
2. the *event* lease (`lease_owner`, `lease_until` on the event): holding the author lease, the
   worker takes that author's oldest waiting event, so each author's events run in `_id` order.

Authors are served fairly, not oldest event first: one candidate search (Queue.candidates)
finds the distinct authors with a claimable event, and the worker serves each of them one event
(a *round*), those it served least recently first, before it searches again. An author with a
thousand events waiting therefore delays another author's event by at most one of its own per
worker, whatever its backlog. The lease of the author just served is kept until the next claim,
so that an author served again at once (alone in its round) needs no new acquisition."""

from __future__ import annotations

from collections import OrderedDict, deque

from bson import ObjectId

from app.pipeline.queue import Queue, QueuedEvent
from app.storage.models import utcnow
from fanout.leases import AuthorLeases

# How many authors a worker remembers having served, to order a round least recently served
# first; an author forgotten counts as never served (first in its round), which is fair too.
SERVED_MEMORY = 10_000


class Claims:
    """The claiming state of one worker (`owner`): the author it kept, the round it serves."""

    def __init__(self, events: Queue, leases: AuthorLeases, owner: str, lease_s: float) -> None:
        self.events = events
        self.leases = leases
        self.owner = owner
        self.lease_s = lease_s
        # The author whose lease this worker kept after an event (released at the next claim
        # unless that claim serves the same author).
        self.held: ObjectId | None = None
        # The authors of this round still to serve, the next first.
        self.queue: deque[ObjectId] = deque()
        # Authors served, the least recently served first.
        self.served: OrderedDict[ObjectId, None] = OrderedDict()

    async def claim(self) -> QueuedEvent | None:
        """Lease the next author of the round (searching for a new round when it is over) and
        claim that author's oldest waiting event."""
        held, self.held = self.held, None
        refreshed = False
        event: QueuedEvent | None = None
        while event is None:
            if not self.queue:
                if refreshed:
                    break
                self.queue = deque(self.order(await self._candidates()))
                refreshed = True
                continue
            author = self.queue.popleft()
            now = utcnow()  # a fresh clock reading: the round may have been found a while ago
            if author == held:
                held = None
                leased = await self.leases.renew(author, self.owner, now, self.lease_s)
            else:
                leased = await self.leases.acquire(author, self.owner, now, self.lease_s)
            if not leased:
                continue  # another worker holds it: it applies those events
            event = await self.events.claim_oldest(author, self.owner, self.lease_s)
            if event is None:
                await self.leases.release(author, self.owner)
        if held is not None:
            await self.leases.release(held, self.owner)
        if event is not None:
            self._served(event["author_id"])
        return event

    def order(self, authors: list[ObjectId]) -> list[ObjectId]:
        """A round: authors never served first (in the order found: oldest event first), then
        the least recently served."""
        rank = {a: i for i, a in enumerate(self.served)}
        return sorted(authors, key=lambda a: rank.get(a, -1))

    def _served(self, author: ObjectId) -> None:
        self.served.pop(author, None)
        self.served[author] = None
        while len(self.served) > SERVED_MEMORY:
            self.served.popitem(last=False)

    async def _candidates(self) -> list[ObjectId]:
        """The authors with a claimable event that no other worker holds (queue.candidates). A
        claim re-checks everything it relies on (the author's lease, then the author's oldest
        waiting event), so an entry made stale by another worker only costs a failed lease or
        an empty look."""
        now = utcnow()
        busy = set(await self.leases.held(now, by_others_than=self.owner))
        return await self.events.candidates(now, busy)

    async def applied(self, author: ObjectId) -> None:
        """After one of `author`'s events was applied: keep its lease until the next claim."""
        self.held = author

    async def release_held(self) -> None:
        if self.held is not None:
            author, self.held = self.held, None
            await self.leases.release(author, self.owner)


async def take_back(events: Queue, leases: AuthorLeases, owner: str) -> int:
    """Before a worker named `owner` claims anything: hand back at once every event and author
    lease a dead predecessor of the same name still holds (a worker SIGKILLed and restarted
    under its `--name`), instead of leaving them until their lease expires. Returns how many
    events were handed back. Sound only because a live worker's name is unique: the fence and
    the renewals already tell owners apart by name alone. The events keep their attempt count
    (a worker that dies on an event every time still parks it after MAX_CLAIMS)."""
    held = events.events.find({"state": "pending", "lease_owner": owner}, {"_id": 1})
    ids = [doc["_id"] async for doc in held]
    for event_id in ids:
        await events.hand_back(event_id, owner, 0.0)
    await leases.release_all(owner)
    return len(ids)
