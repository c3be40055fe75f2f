"""Randomized equivalence: one random workload through every strategy, compared with the reference
model (tests/model.py) after every drain.

A workload is a `Script`: operations chosen against the model, each with the answer the model
expects (response codes, and after every drain every user's whole timeline). The script is then
played through each strategy in turn, on a fresh database, every other play without
transactions (the staged outbox of a standalone mongod). (The strategies cannot run side by
side in one process: Beanie binds its document classes to one database at a time.)

Two drivers write scripts with the same kinds of steps: a hypothesis state machine and a seeded
`random.Random` generator (more steps per second, no engine overhead). What makes them find
bugs, measured by reintroducing the two receiver_copies bugs they found: a small TIMELINE_MAX
(1 to 3, so trims, refills, window slides and audience watermarks happen within a few steps),
deletes of statuses someone sees, newcomers who only read (their timelines hold backfills only),
and a check after most steps (a divergence is soon masked by newer statuses).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    precondition,
    rule,
)

from app import cursors
from app.context import AppContext
from app.domain import markers
from app.pipeline.queued import QueuedEvent
from app.storage.models import utcnow
from app.strategies import STRATEGY_NAMES
from app.strategies.hybrid import low_mark
from app.strategies.inbox_buckets import InboxBuckets
from fanout.fold import fold_due
from fanout.worker import Worker
from tests import harness
from tests.derived import Crossings
from tests.harness import FakeClock, Harness
from tests.model import Model

# Each script has its own TIMELINE_MAX: 1 is the narrowest window, 3 lets several authors mix.
TIMELINE_MAXES = (1, 2, 3)
# Three authors; up to three newcomers join later and only read.
AUTHORS = ["user0", "user1", "user2"]
NEWCOMERS = ["user3", "user4", "user5"]
# Posts come in bursts of up to this many, so that timelines overflow within a few steps.
MAX_BURST = 4
# The last check of a script reads timelines through the API in pages of 2, so that it follows
# `next_cursor` across the TIMELINE_MAX bound; the others read what the strategy materialized
# (what the API serves) directly, at a fraction of the cost.
LAST_CHECK_PAGE = 2
# Days an `advance` step moves the clock: a short absence, or one longer than
# TIMELINE_ACTIVE_DAYS (7) after which the service stops fanning out to those who did not read.
ADVANCE_DAYS = (3, 8)
# hybrid's HYBRID_THRESHOLD per script: with up to five friends each, authors cross 2 and 3
# both ways within a few steps (test_strategies_match_the_model_seeded counts the crossings).
HYBRID_THRESHOLDS = (2, 3)
# How many preceding steps a failure message shows.
CONTEXT_STEPS = 15


@dataclass(frozen=True)
class Step:
    kind: str  # user, post, delete, request, accept, withdraw, unfriend, mark, read, advance, drain
    a: str = ""
    b: str = ""
    number: int = -1  # a status, by its number in the model (advance: days)
    expect: object = None  # what the model says the service must answer

    def __str__(self) -> str:
        parts = [self.kind, self.a, self.b, f"#{self.number}" if self.number >= 0 else ""]
        text = " ".join(p for p in parts if p)
        return text if self.kind == "drain" or self.expect is None else f"{text} -> {self.expect}"


@dataclass
class Script:
    """Operations chosen against the model, with the model's expected answers."""

    model: Model
    steps: list[Step] = field(default_factory=list)
    # The hybrid strategy's HYBRID_THRESHOLD for this script, and how often an author's friend
    # count crossed it in the model ("up" past it, "down" back to it): small, so runs cross.
    hybrid_threshold: int = HYBRID_THRESHOLDS[0]
    crossings: Counter[str] = field(default_factory=Counter)
    # Who is on hybrid's large side, as the strategy decides it: above the threshold, and
    # between its low mark and the threshold for those who were already large.
    large: set[str] = field(default_factory=set)

    def _friend_counts(self) -> dict[str, int]:
        return {u: sum(u in f for f in self.model.friendships) for u in self.model.users}

    def _count_crossings(self, before: dict[str, int]) -> None:
        del before  # the sides say it all
        t, low = self.hybrid_threshold, low_mark(self.hybrid_threshold)
        for user, n in self._friend_counts().items():
            if n > t and user not in self.large:
                self.crossings["up"] += 1
                self.large.add(user)
            elif n <= low and user in self.large:
                self.crossings["down"] += 1
                self.large.discard(user)

    def add_user(self, handle: str) -> None:
        self.model.add_user(handle)
        self.steps.append(Step("user", handle))

    def post(self, author: str) -> None:
        self.steps.append(Step("post", author, number=self.model.post(author)))
        self.model.read(author)  # the player reads the author's timeline after posting

    def delete(self, number: int) -> None:
        author = self.model.statuses[number]
        self.model.delete(number)
        self.steps.append(Step("delete", author, number=number))
        self.model.read(author)  # as after posting

    def advance(self, days: int) -> None:
        """Time passes (the service's activity clock is a fake): users may go away."""
        self.model.advance(days)
        self.steps.append(Step("advance", number=days))

    def read(self, user: str) -> None:
        """`user` reads their first page. A user coming back from away must get the whole
        timeline at once, drained or not (it is served from the truth while it is rebuilt)."""
        expect = self.model.timeline(user) if self.model.away(user) else None
        self.model.read(user)
        self.steps.append(Step("read", user, expect=expect))

    def request(self, me: str, to: str) -> str:
        before = self._friend_counts()
        expected = self.model.request(me, to)
        self._count_crossings(before)
        self.steps.append(Step("request", me, to, expect=expected))
        return expected

    def accept(self, me: str, requester: str) -> None:
        before = self._friend_counts()
        expected = self.model.accept(me, requester)
        self._count_crossings(before)
        self.steps.append(Step("accept", me, requester, expect=expected))

    def withdraw(self, me: str, other: str) -> None:
        self.model.withdraw(me, other)
        self.steps.append(Step("withdraw", me, other))

    def befriend(self, a: str, b: str) -> None:
        """A request and its acceptance, as people do it."""
        if self.request(a, b) == "pending":
            self.accept(b, a)

    def join(self, newcomer: str, friend: str) -> None:
        """A newcomer signs up and befriends someone: their timeline starts with a backfill."""
        self.add_user(newcomer)
        self.befriend(newcomer, friend)
        # and reads at once: from then on they can go away (one who never read counts active)
        self.read(newcomer)

    def unfriend(self, a: str, b: str) -> None:
        before = self._friend_counts()
        self.model.unfriend(a, b)
        self._count_crossings(before)
        self.steps.append(Step("unfriend", a, b))

    def mark(self, user: str, number: int) -> None:
        """POST /markers (no version) at status `number`, which may be deleted or unseen."""
        self.steps.append(Step("mark", user, number=number, expect=self.model.mark(user, number)))

    def peek(self, *users: str) -> None:
        """The first of `users` reads their whole timeline through the API (pages, a refresh,
        the unread count) before any drain: everything shown or counted must be allowed by the
        model now (Model.allowed), whatever the worker has applied. One reader per step keeps
        the plays short. A reader back from away gets their whole timeline at once, as in
        `read`."""
        for user in [u for u in users if u in self.model.users][:1]:
            marker = self.model.markers.get(user, (-1, 0))[0]
            full = self.model.timeline(user) if self.model.away(user) else None
            self.steps.append(Step("peek", user, expect=(self.model.allowed(user), marker, full)))
            self.model.read(user)

    def watchers(self, number: int) -> list[str]:
        """Those whose timeline shows status `number` now: who must stop seeing it."""
        return [u for u in sorted(self.model.users) if number in self.model.timeline(u)]

    def drain(self, *, via_api: bool = False) -> None:
        """Drain the worker and compare every user's timeline and unread count: read through
        the API (`a`) or, cheaper, straight from the strategy."""
        if not via_api and self.steps and self.steps[-1].kind == "drain":
            return  # nothing happened since the last check
        users = sorted(self.model.users)
        expect = {u: (self.model.timeline(u), self.model.unread(u)) for u in users}
        self.steps.append(Step("drain", "api" if via_api else "", expect=expect))
        if via_api:
            for u in users:
                self.model.read(u)


# What the worker does between the steps of a play (a drain step always drains it): nothing
# (stopped), one event per step (slow: derived data half-way through a change), or one event per
# step that fails half the time before its handler runs and half the time after (failing:
# retried with backoff, so events wait while others go ahead). Reads are checked in each.
WORKER_MODES = ("stopped", "slow", "failing")
# inbox_buckets: every this-many-th step folds every loose entry (fanout.fold); odd, so that
# folds fall both right after posts and after the worker's steps.
FOLD_EVERY = 3


class Player:
    """Plays a script through one strategy's harness, asserting every expected answer."""

    def __init__(self, h: Harness, name: str, script: Script, worker_mode: str = "stopped") -> None:
        self.h = h
        self.worker_mode = worker_mode
        self.failures = 0
        # Which authors hybrid itself moved across its threshold, read from its collections.
        self.crossings = Crossings()
        self.name = name
        self.steps = script.steps
        self.max_items = script.model.max_items
        self.ids: dict[int, str] = {}  # model number -> this database's status id
        self.numbers: dict[str, int] = {}
        self.user_ids: dict[str, ObjectId] = {}
        self.at = 0
        self.clock = FakeClock()
        h.ctx.activity.clock = self.clock

    def where(self) -> str:
        start = max(0, self.at - CONTEXT_STEPS)
        recent = "; ".join(str(s) for s in self.steps[start : self.at + 1])
        return f"[{self.name}] step {self.at}: {self.steps[self.at]} (after: {recent})"

    async def play(self) -> None:
        for at, step in enumerate(self.steps):
            self.at = at
            await self.step(step)
            if step.kind != "drain":
                await self.between_steps()

    async def between_steps(self) -> None:
        if self.h.ctx.strategy.name == "inbox_buckets" and self.at % FOLD_EVERY == 0:
            # Loose entries folded into the chains now and then, as the pool's fold pass does:
            # reads and checks meet chains with and without loose entries.
            strategy = self.h.ctx.strategy
            assert isinstance(strategy, InboxBuckets)
            await fold_due(strategy, utcnow() + timedelta(days=1))
        if self.worker_mode == "slow":
            await self.h.worker.process_one()
        elif self.worker_mode == "failing":
            await FailingWorker(self.h.ctx, fail_after=self.failures % 2 == 1).process_one()
            self.failures += 1

    async def peek(self, s: Step) -> None:
        """The whole timeline in pages of 2, a refresh and the unread count: all allowed by the
        model when the read started, in order, and consistent with each other."""
        h = self.h
        allowed, marker, full = s.expect  # type: ignore[misc]
        ids = await h.timeline_ids(s.a, page=2)
        got = [self.numbers.get(i, -1) for i in ids]
        if full is not None:
            assert got == full, f"{s.a} on return: got {got}; {self.where()}"
        assert set(got) <= allowed, f"{s.a} sees {sorted(set(got) - allowed)}; {self.where()}"
        assert got == sorted(set(got), reverse=True), f"{s.a}: {got}; {self.where()}"
        r = await h.client.get("/timeline/unread_count", headers=h.auth(s.a))
        newer = sum(n > marker for n in got)
        assert r.json()["count"] == newer, f"{s.a}: {r.json()} for {got}; {self.where()}"
        if len(ids) >= 2:  # a refresh from the oldest item: the newest one above it, a gap
            page = await h.timeline(s.a, limit=1, after=cursors.encode(ObjectId(ids[-1])))
            assert [i["id"] for i in page["items"]] == ids[:1], self.where()
            assert page["gap"] == (len(ids) > 2), self.where()

    async def step(self, s: Step) -> None:
        h = self.h
        if s.kind == "user":
            self.user_ids[s.a] = ObjectId((await h.user(s.a))["id"])
        elif s.kind == "post":
            status = await h.post(s.a, f"status {s.number} by {s.a}")
            self.ids[s.number] = status["id"]
            self.numbers[status["id"]] = s.number
            # The author sees their own status as soon as POST /statuses has returned.
            first = await h.timeline(s.a, limit=1)
            assert [i["id"] for i in first["items"]] == [status["id"]], self.where()
        elif s.kind == "delete":
            await h.delete(s.a, self.ids[s.number])
            # It leaves the author's own timeline at once.
            own = await h.timeline(s.a, limit=self.max_items)
            assert self.ids[s.number] not in {i["id"] for i in own["items"]}, self.where()
        elif s.kind == "request":
            r = await h.client.post("/friend-requests", json={"to": s.b}, headers=h.auth(s.a))
            assert r.status_code == (201 if s.expect == "pending" else 200), self.where()
            assert r.json()["status"] == s.expect, self.where()
        elif s.kind == "accept":
            r = await h.client.post(f"/friend-requests/{s.b}/accept", headers=h.auth(s.a))
            assert r.status_code == (200 if s.expect else 404), self.where()
        elif s.kind == "withdraw":
            r = await h.client.delete(f"/friend-requests/{s.b}", headers=h.auth(s.a))
            assert r.status_code == 204, self.where()
        elif s.kind == "unfriend":
            await h.unfriend(s.a, s.b)
        elif s.kind == "mark":
            home = {"last_read_id": self.ids[s.number]}
            r = await h.client.post("/markers", json={"home": home}, headers=h.auth(s.a))
            if s.expect is None:  # past the newest status that exists
                assert r.status_code == 422, self.where()
                assert r.json()["error"]["code"] == "marker_ahead", self.where()
                return
            assert r.status_code == 200, self.where()
            got = r.json()["home"]
            assert (self.numbers[got["last_read_id"]], got["version"]) == s.expect, self.where()
        elif s.kind == "advance":
            self.clock.advance(timedelta(days=s.number))
        elif s.kind == "read":
            page = await h.timeline(s.a, limit=self.max_items)
            if s.expect is not None:
                got = [self.numbers.get(i["id"], -1) for i in page["items"]]
                assert got == s.expect, f"{s.a} on return: got {got}; {self.where()}"
        elif s.kind == "peek":
            await self.peek(s)
        elif s.kind == "drain":
            await self.drain_and_check(s)
        else:
            raise AssertionError(f"unknown step {s}")

    async def drain_and_check(self, s: Step) -> None:
        """Drain the worker; then every user's whole timeline must be the model's."""
        h = self.h
        if self.worker_mode == "failing":
            # The failed events' backoff is over: a drain applies everything.
            await h.ctx.store.events.update_many(
                {"state": "pending"}, {"$set": {"lease_until": None}}
            )
            await h.ctx.queue.retry_dead(None)
        await h.drain()
        if h.ctx.strategy.name == "hybrid":
            await self.crossings.observe(h.ctx.store, list(self.user_ids.values()))
        if s.a == "api":
            health = (await h.client.get("/health")).json()
            assert health["pending_events"] == 0, self.where()
        else:
            assert await h.ctx.queue.reader.pending_count() == 0, self.where()
        assert isinstance(s.expect, dict)
        for user, (expected, expected_unread) in s.expect.items():
            if s.a == "api":
                ids = await h.timeline_ids(user, page=LAST_CHECK_PAGE)
                r = await h.client.get("/timeline/unread_count", headers=h.auth(user))
                unread = (r.json()["count"], r.json()["capped"])
            else:
                # What a read would be served by, without recording one: an away user's
                # materialized timeline is stale by design until their return rebuilds it.
                uid = self.user_ids[user]
                served = h.ctx.truth
                if await h.ctx.activity.serves_materialized(uid):
                    served = h.ctx.strategy
                ids = [str(i) for i in await served.timeline_ids(uid)]
                unread = await markers.unread_count(h.ctx.store, served, uid)
            got = [self.numbers.get(i, -1) for i in ids]
            assert got == expected, f"{user}: got {got}, expected {expected}; {self.where()}"
            assert unread == expected_unread, f"{user}: unread {unread}; {self.where()}"


class FailingWorker(Worker):
    """A worker whose event fails, before or after its handler ran (app.pipeline.queue retries
    it)."""

    def __init__(self, ctx: AppContext, *, fail_after: bool) -> None:
        super().__init__(ctx)
        self.fail_after = fail_after

    async def _apply(self, event: QueuedEvent) -> None:
        if self.fail_after:
            await super()._apply(event)
        raise RuntimeError("injected failure")


def without_retryable_writes(url: str) -> str:
    """SecantusDB keeps a record of every retryable write for 30 minutes and, past 10,000 of
    them, sorts them all on every further write (`_prune_retryable_locked` in
    secantus/transactions.py): measured here, the same seeded workload took 37 s, 42 s, 69 s,
    92 s in a row on one server, and a flat 30-37 s without retryable writes. These tests write
    the most in the suite, so they do without (nothing they check depends on a driver retry),
    which also keeps them from slowing down every test that runs after them."""
    if "retrywrites=" in url.lower():
        return url  # the embedded server's URL already says so (app/storage/embedded.py)
    if "?" in url:
        return f"{url}&retryWrites=false"
    # The driver wants a "/" between the hosts and the options.
    has_path = "/" in url.partition("://")[2]
    return f"{url}{'?' if has_path else '/?'}retryWrites=false"


async def play_everywhere(
    url: str, script: Script, turn: int = 0, names: Sequence[str] = STRATEGY_NAMES
) -> Crossings:
    """Play the script through every strategy, each on a fresh database. Every other play
    takes the no-transaction path (a standalone mongod: events staged before the change,
    app.pipeline.outbox), alternating with `turn`, so that across scripts every strategy is checked
    both ways at the cost of one play per strategy. Returns the crossings hybrid made."""
    url = without_retryable_writes(url)
    crossings = Crossings()
    for i, name in enumerate(names):
        # inbox_buckets with buckets of 2 or 3 entries: timelines cross bucket edges often.
        extra = {"inbox_bucket_size": 2 + turn % 2} if name == "inbox_buckets" else {}
        settings = harness.test_settings(
            url, name, script.model.max_items, hybrid_threshold=script.hybrid_threshold, **extra
        )
        async with harness.running(settings) as h:
            transactions = (i + turn) % 2 == 0
            if not transactions:
                h.ctx.database = dataclasses.replace(h.ctx.database, supports_transactions=False)
            mode = WORKER_MODES[(i + turn) % len(WORKER_MODES)]
            label = f"{name}, worker {mode}" + ("" if transactions else ", no transactions")
            player = Player(h, label, script, mode)
            await player.play()
            if name == "hybrid":
                crossings = player.crossings
    return crossings


def new_script(max_items: int, hybrid_threshold: int = HYBRID_THRESHOLDS[0]) -> Script:
    script = Script(Model(max_items), hybrid_threshold=hybrid_threshold)
    for handle in AUTHORS:
        script.add_user(handle)
    return script


def seen_statuses(model: Model) -> list[list[int]]:
    """The non-empty timelines: deleting from one of them slides a window."""
    return [t for u in sorted(model.users) if (t := model.timeline(u))]


# -- hypothesis --------------------------------------------------------------------------------

MACHINE_EXAMPLES = 12
MACHINE_STEPS = 25


class TimelineMachine(RuleBasedStateMachine):
    """Writes a script step by step (each step optionally followed by a drain and a check);
    the teardown plays it through every strategy."""

    mongo_url: ClassVar[str] = ""
    plays: ClassVar[int] = 0  # alternates the transaction path between scripts

    def __init__(self) -> None:
        super().__init__()
        self.script: Script | None = None

    @initialize(
        max_items=st.sampled_from(TIMELINE_MAXES),
        threshold=st.sampled_from(HYBRID_THRESHOLDS),
        data=st.data(),
    )
    def start(self, max_items: int, threshold: int, data: st.DataObject) -> None:
        self.script = new_script(max_items, threshold)
        # A history first, so that friendships made later have statuses to backfill (or not).
        for author in AUTHORS:
            for _ in range(data.draw(st.integers(0, 2 * max_items + 1), label=author)):
                self.script.post(author)
        self.script.drain()  # applied while nobody has friends: later backfills are bounded

    @property
    def s(self) -> Script:
        assert self.script is not None
        return self.script

    def _pair(self, data: st.DataObject) -> tuple[str, str]:
        people = sorted(self.s.model.users)
        a = data.draw(st.sampled_from(people), label="a")
        b = data.draw(st.sampled_from([p for p in people if p != a]), label="b")
        return a, b

    def _then(self, drain: bool, *readers: str) -> None:
        """`readers` read at once (Script.peek), then the worker drains if `drain`."""
        self.s.peek(*readers)
        if drain:
            self.s.drain()

    @rule(author=st.sampled_from(AUTHORS), count=st.integers(1, MAX_BURST), drain=st.booleans())
    def post(self, author: str, count: int, drain: bool) -> None:
        for _ in range(count):
            self.s.post(author)
        self._then(drain, author)

    @precondition(lambda self: self.script is not None and bool(self.script.model.statuses))
    @rule(data=st.data(), drain=st.booleans())
    def delete(self, data: st.DataObject, drain: bool) -> None:
        """A status someone sees (those deletes slide windows), or any status."""
        seen = seen_statuses(self.s.model)
        pick_seen: bool = data.draw(st.booleans(), label="one that is seen")
        if seen and pick_seen:
            pool = data.draw(st.sampled_from(seen), label="a timeline")
        else:
            pool = sorted(self.s.model.statuses)
        number = data.draw(st.sampled_from(pool), label="status")
        watchers = self.s.watchers(number)
        self.s.delete(number)
        self._then(drain, *watchers[:2])

    @rule(data=st.data(), drain=st.booleans())
    def befriend(self, data: st.DataObject, drain: bool) -> None:
        pair = self._pair(data)
        self.s.befriend(*pair)
        self._then(drain, *pair)

    @rule(data=st.data(), drain=st.booleans())
    def unfriend(self, data: st.DataObject, drain: bool) -> None:
        pair = self._pair(data)
        self.s.unfriend(*pair)
        self._then(drain, *pair)

    @rule(
        data=st.data(),
        action=st.sampled_from(["request", "accept", "withdraw"]),
        drain=st.booleans(),
    )
    def request_step(self, data: st.DataObject, action: str, drain: bool) -> None:
        """Single steps of the consent flow, so pending and crossing requests happen too."""
        me, other = self._pair(data)
        if action == "request":
            self.s.request(me, other)
        elif action == "accept":
            self.s.accept(me, other)
        else:
            self.s.withdraw(me, other)
        self._then(drain, me, other)

    @precondition(lambda self: self.script is not None and self.script.model.next_number > 0)
    @rule(data=st.data(), drain=st.booleans())
    def mark(self, data: st.DataObject, drain: bool) -> None:
        """A user marks a status of their timeline read, or any status (deleted ones too)."""
        user = data.draw(st.sampled_from(sorted(self.s.model.users)), label="reader")
        pool = self.s.model.timeline(user) or list(range(self.s.model.next_number))
        if data.draw(st.booleans(), label="any status"):
            pool = list(range(self.s.model.next_number))
        self.s.mark(user, data.draw(st.sampled_from(pool), label="status"))
        self._then(drain, user)

    @rule(data=st.data(), drain=st.booleans())
    def read(self, data: st.DataObject, drain: bool) -> None:
        """A user reads their first page (checked at once if they come back from away)."""
        self.s.read(data.draw(st.sampled_from(sorted(self.s.model.users)), label="reader"))
        self._then(drain)

    @rule(days=st.sampled_from(ADVANCE_DAYS))
    def advance(self, days: int) -> None:
        self.s.advance(days)

    @rule(rng=st.randoms(use_true_random=False), drain=st.booleans())
    def cross(self, rng: random.Random, drain: bool) -> None:
        """Someone's friend count taken across hybrid's threshold, either way."""
        before = len(self.s.steps)
        cross_threshold(self.s, rng)
        moved = [s.a for s in self.s.steps[before:]] + [s.b for s in self.s.steps[before:]]
        self._then(drain, *[u for u in moved if u])

    @precondition(
        lambda self: (
            self.script is not None and len(self.script.model.users) < len(AUTHORS) + len(NEWCOMERS)
        )
    )
    @rule(data=st.data(), drain=st.booleans())
    def join(self, data: st.DataObject, drain: bool) -> None:
        newcomer = NEWCOMERS[len(self.s.model.users) - len(AUTHORS)]
        friend = data.draw(st.sampled_from(sorted(self.s.model.users)), label="friend")
        self.s.join(newcomer, friend)
        self._then(drain, newcomer, friend)

    def teardown(self) -> None:
        if self.script is None:
            return
        self.script.drain(via_api=True)
        TimelineMachine.plays += 1
        asyncio.run(play_everywhere(self.mongo_url, self.script, TimelineMachine.plays))


def fresh_seed(variable: str) -> int:
    """The seed of a randomized test: `variable` from the environment to replay a failure, else
    a new one each run (printed on failure: pytest shows the captured output)."""
    value = os.environ.get(variable)
    seed = int(value) if value else random.SystemRandom().randrange(2**32)
    print(f"{variable}={seed}  # set it to replay this run")
    return seed


def test_strategies_match_the_model_hypothesis(mongo_url: str) -> None:
    TimelineMachine.mongo_url = mongo_url
    machine_test = get_state_machine_test(
        TimelineMachine,
        settings=settings(
            max_examples=MACHINE_EXAMPLES,
            stateful_step_count=MACHINE_STEPS,
            deadline=None,
            database=None,
            # No shrinking: every attempt replays a script on five databases, and hypothesis
            # would spend its full five minutes. The failure names the step and the steps
            # before it, and hypothesis prints the whole script. (receiver_copies trims by a
            # hash of ids, which differ per run: a failure that depends on a trim may not
            # replay, and is then reported as a FlakyFailure carrying the original error.)
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # Fresh scripts every run (HYPOTHESIS_SEED replays one).
    seed(fresh_seed("HYPOTHESIS_SEED"))(machine_test)()


# -- seeded workload ---------------------------------------------------------------------------

# The pinned seed, a regression case beside a fresh one each run: its rounds pass the coverage
# checks of the test (returns, marks, crossings...), as 25 of seeds 0-29 do with five rounds
# and the peeks of every step (a peek of a user back from away is a return too).
SEED = 0
SEEDED_ROUNDS = 5
STEPS_PER_ROUND = 30
# Relative weights of the kinds of steps.
STEP_WEIGHTS = {
    "post": 3,
    "delete": 2,
    "befriend": 2,
    "unfriend": 1,
    "request_step": 1,
    "drain": 8,  # a check is cheap, and a divergence is soon masked by newer statuses
    "join": 3,  # (no-op once every newcomer has joined)
    "mark": 2,
    "read": 4,  # with "advance", often enough that a user comes back from away in most rounds
    "advance": 4,
    "cross": 3,  # an author's friend count taken across hybrid's threshold, either way
}

# Most deletes hit a status that someone sees, so that windows slide and timelines refill.
SEEN_DELETE_SHARE = 0.75
# A crossing step takes someone down across hybrid's threshold this often when anyone is above
# it (else up): ups come of ordinary befriending too, downs mostly of this step.
CROSS_DOWN_SHARE = 0.7
# Most reads are by a user who is away, if any is (a return, checked at once).
RETURN_SHARE = 0.75
# Most marks are at a status the reader sees, as a client's are; the rest at any status.
SEEN_MARK_SHARE = 0.75


def cross_threshold(script: Script, rng: random.Random) -> None:
    """Take someone across hybrid's threshold: a large author down to its low mark
    (hybrid.low_mark; CROSS_DOWN_SHARE of the time, if anyone is large), else someone up past
    the threshold by befriending others (newcomers join when there are too few). Ordinary
    steps move counts by one, in and out of the band between the two marks."""
    model, t = script.model, script.hybrid_threshold
    low = low_mark(t)
    people = sorted(model.users)

    def friends_of(u: str) -> list[str]:
        return [v for v in people if v != u and model.are_friends(u, v)]

    above = sorted(script.large)  # on hybrid's large side: above the low mark
    below = [u for u in people if u not in script.large]
    if above and (not below or rng.random() < CROSS_DOWN_SHARE):
        user = rng.choice(above)
        friends = friends_of(user)
        for other in rng.sample(friends, len(friends) - low):
            script.unfriend(*rng.choice([(user, other), (other, user)]))
        return
    # Up: the one closest to it (ties at random), so that even a threshold of 3 is crossed
    # while few people have joined.
    most = max(len(friends_of(u)) for u in below)
    user = rng.choice([u for u in below if len(friends_of(u)) == most])
    others = [v for v in people if v != user and v not in friends_of(user)]
    needed = t + 1 - len(friends_of(user))
    for other in rng.sample(others, max(0, min(len(others), needed))):
        script.befriend(*rng.choice([(user, other), (other, user)]))
    # Short of people: newcomers join as this user's friends.
    for newcomer in [n for n in NEWCOMERS if n not in model.users][: needed - len(others)]:
        script.join(newcomer, user)


def seeded_script(
    rng: random.Random, steps: int, max_items: int, hybrid_threshold: int = HYBRID_THRESHOLDS[0]
) -> Script:
    script = new_script(max_items, hybrid_threshold)
    model = script.model
    # A history first, so that friendships made later have statuses to backfill (or not).
    for author in AUTHORS:
        for _ in range(rng.randint(0, 2 * max_items + 1)):
            script.post(author)
    script.drain()  # applied while nobody has friends: later backfills are bounded
    kinds, weights = list(STEP_WEIGHTS), list(STEP_WEIGHTS.values())
    for _ in range(steps):
        kind = rng.choices(kinds, weights)[0]
        people = sorted(model.users)
        a, b = rng.sample(people, 2)
        # Who reads right after the step, before any drain (Script.peek): those it concerns.
        peekers = [a, b]
        if kind == "join" and len(people) < len(AUTHORS) + len(NEWCOMERS):
            script.join(NEWCOMERS[len(people) - len(AUTHORS)], a)
            peekers = [NEWCOMERS[len(people) - len(AUTHORS)], a]
        elif kind == "post":
            author = rng.choice(AUTHORS)
            for _ in range(rng.randint(1, MAX_BURST)):
                script.post(author)
        elif kind == "delete" and model.statuses:
            seen = seen_statuses(model)
            if seen and rng.random() < SEEN_DELETE_SHARE:
                number = rng.choice(rng.choice(seen))
            else:
                number = rng.choice(sorted(model.statuses))
            peekers = script.watchers(number)[:2] or peekers
            script.delete(number)
        elif kind == "befriend":
            script.befriend(a, b)
        elif kind == "unfriend":
            script.unfriend(a, b)
        elif kind == "request_step":
            action = rng.choice(["request", "accept", "withdraw"])
            if action == "request":
                script.request(a, b)
            elif action == "accept":
                script.accept(a, b)
            else:
                script.withdraw(a, b)
        elif kind == "mark" and model.next_number:
            # Mostly a status the reader sees (as a client does), else any, deleted ones too.
            pool = model.timeline(a) if rng.random() < SEEN_MARK_SHARE else []
            script.mark(a, rng.choice(pool or range(model.next_number)))
        elif kind == "read":
            # Mostly someone who is away, if anyone is: a return is what is checked at once.
            away = [u for u in people if model.away(u)]
            script.read(rng.choice(away) if away and rng.random() < RETURN_SHARE else a)
        elif kind == "advance":
            script.advance(rng.choice(ADVANCE_DAYS))
        elif kind == "cross":
            cross_threshold(script, rng)
        elif kind == "drain":
            script.drain()
            continue
        if kind != "advance":
            script.peek(*peekers)
    script.drain(via_api=True)
    return script


def is_return(step: Step) -> bool:
    """A read by a user back from away (checked against the whole timeline at once)."""
    if step.kind == "read":
        return step.expect is not None
    return step.kind == "peek" and step.expect[2] is not None  # type: ignore[index]


def seeded_scripts(seed_value: int) -> list[Script]:
    rng = random.Random(seed_value)
    return [
        seeded_script(
            rng,
            STEPS_PER_ROUND,
            TIMELINE_MAXES[i % len(TIMELINE_MAXES)],
            HYBRID_THRESHOLDS[i % len(HYBRID_THRESHOLDS)],
        )
        for i in range(SEEDED_ROUNDS)
    ]


def coverage_gaps(scripts: list[Script]) -> list[str]:
    """What the rounds fail to exercise, of what they are for (empty: all of it)."""
    most = len(scripts) // 2
    gaps = []
    # Authors cross hybrid's threshold both ways in most rounds.
    if sum(s.crossings["up"] > 0 and s.crossings["down"] > 0 for s in scripts) <= most:
        gaps.append(f"crossings {[dict(s.crossings) for s in scripts]}")
    # Overflowing timelines and accepted friendships in every round; newcomers in most.
    for script in scripts:
        posts = Counter(s.a for s in script.steps if s.kind == "post")
        if max(posts.values(), default=0) <= script.model.max_items:
            gaps.append("no timeline overflows")
        if not any(s.kind == "accept" and s.expect is True for s in script.steps):
            gaps.append("no accepted request")
    if sum(bool(s.model.users & set(NEWCOMERS)) for s in scripts) <= most:
        gaps.append("newcomers")
    # Markers move (so unread counts are not simply whole timelines) in most rounds.
    if sum(any(s.kind == "mark" for s in t.steps) for t in scripts) <= most:
        gaps.append("marks")
    # Users go away and come back (checked against the whole timeline) in most rounds.
    if sum(any(is_return(s) for s in t.steps) for t in scripts) <= most:
        gaps.append("returns")
    return gaps


# A fresh seed is moved on by one until its rounds cover what they are for (most do at once,
# 25 of seeds 0-29); this many tries at most.
SEED_TRIES = 50


@pytest.mark.parametrize("case", ["pinned", "fresh"])
async def test_strategies_match_the_model_seeded(mongo_url: str, case: str) -> None:
    """The pinned seed is a regression case; the fresh one differs every run
    (EQUIVALENCE_SEED replays it)."""
    if case == "pinned":
        seed_value, scripts = SEED, seeded_scripts(SEED)
        assert coverage_gaps(scripts) == []
    else:
        base = fresh_seed("EQUIVALENCE_SEED")
        for seed_value in range(base, base + SEED_TRIES):
            scripts = seeded_scripts(seed_value)
            if not coverage_gaps(scripts):
                break
        print(f"EQUIVALENCE_SEED={seed_value}  # the seed played")
    both_ways = 0
    for turn, script in enumerate(scripts):
        crossed = await play_everywhere(mongo_url, script, turn)
        both_ways += bool(crossed.up and crossed.down)
    # The service's own state, not the script's bookkeeping: hybrid moved authors both ways.
    assert both_ways > 0, "hybrid never moved an author across its threshold both ways"
