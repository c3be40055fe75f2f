"""Post-to-visible lag measured during a load run: how long a friend waits to see a new post.

Two extra users, befriended before the load starts and left out of the mix (so that no
unfriend of the mix ever separates them): the *author* sends a post every PROBE_EVERY_S while
the load runs (without waiting for the previous one's answer); the *reader* reads the first
page of their timeline every PROBE_POLL_S, from the start of the load until every probe post
has shown up (the drain after the load included). A post's lag runs from the 201 that
acknowledged it to the answer of the first read that contains it: what a friend refreshing
every PROBE_POLL_S would see, that read's own latency included (an upper bound). The same
measured to when that read was *sent* is a lower bound (the post may have become visible
while the read waited to be served); both are reported. The worker applies events oldest
first, so a probe post waits behind the backlog of every other author's events, like any.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import httpx

# One probe post every this often: 60 in a 30 s run, a small addition to the mix's ~25 posts/s.
PROBE_EVERY_S = 0.5
# The reader refreshes this often: the lag's resolution, and ~10 extra cheap reads a second.
PROBE_POLL_S = 0.1
# The reader's page: the contract's maximum, so that posts still waiting are on it even when
# the ones after them became visible first (they do not, as events are applied in order).
PROBE_PAGE = 100


class Caller(Protocol):
    """The load run's request function: counts the request, records errors, None on error."""

    async def __call__(
        self, action: str, method: str, path: str, **kwargs: object
    ) -> httpx.Response | None: ...


@dataclass
class Probe:
    author_auth: dict[str, str]
    reader_auth: dict[str, str]
    acked_at: dict[str, float] = field(default_factory=dict)  # post id -> monotonic time
    lags_s: list[float] = field(default_factory=list)  # to the answer of the read
    lags_sent_s: list[float] = field(default_factory=list)  # to the sending of the read
    posting: bool = True
    # How often the author posts and the reader looks (a soak, hours long at a low rate, uses
    # a lighter probe than a load run: benchmarks/soak.py).
    every_s: float = PROBE_EVERY_S
    poll_s: float = PROBE_POLL_S

    @property
    def unseen(self) -> int:
        return len(self.acked_at)

    async def post_until(self, call: Caller, deadline: float) -> None:
        sent: list[asyncio.Task[None]] = []
        while time.monotonic() < deadline:
            sent.append(asyncio.create_task(self.post_one(call)))
            await asyncio.sleep(self.every_s)
        await asyncio.gather(*sent)
        self.posting = False

    async def post_one(self, call: Caller) -> None:
        key = uuid.uuid4().hex
        r = await call(
            "probe_post",
            "POST",
            "/statuses",
            json={"text": f"probe {key}"},
            headers={**self.author_auth, "Idempotency-Key": key},
        )
        if r is not None:
            self.acked_at[r.json()["id"]] = time.monotonic()

    async def poll(self, call: Caller) -> None:
        """Read the reader's timeline until posting has stopped and every post was seen.
        Cancelled by the run if the drain fails."""
        while self.posting or self.acked_at:
            await self.look(call)
            await asyncio.sleep(self.poll_s)

    async def look(self, call: Caller) -> None:
        params = {"limit": str(PROBE_PAGE)}
        sent = time.monotonic()
        r = await call("probe_read", "GET", "/timeline", params=params, headers=self.reader_auth)
        if r is None:
            return
        now = time.monotonic()
        for item in r.json()["items"]:
            acked = self.acked_at.pop(item["id"], None)
            if acked is not None:
                self.lags_s.append(now - acked)
                self.lags_sent_s.append(max(0.0, sent - acked))
