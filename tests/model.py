"""A pure-Python reference model of the timeline semantics of ../shared/API.md.

It is deliberately naive (sets, a dict and one sort) so that it is obviously correct: the
randomized tests compare every strategy against it. Statuses are numbered in posting order, which
is also id order on the server (ids grow with time), so "newest first" is "highest number first".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Model:
    max_items: int
    users: set[str] = field(default_factory=set)
    # A friendship is mutual: one unordered pair.
    friendships: set[frozenset[str]] = field(default_factory=set)
    # Pending friend requests as (from, to).
    requests: set[tuple[str, str]] = field(default_factory=set)
    # Existing (not deleted) statuses: number -> author.
    statuses: dict[int, str] = field(default_factory=dict)
    next_number: int = 0
    # Home read markers: user -> (number of the last status read, version).
    markers: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Activity (issue 13): the day it is, each user's last timeline read (a user who never
    # read counts as active), and TIMELINE_ACTIVE_DAYS. Activity never changes a timeline;
    # it says which users the service may have stopped fanning out to.
    today: int = 0
    last_read: dict[str, int] = field(default_factory=dict)
    active_days: int = 7

    # -- users and friends ---------------------------------------------------------------------
    def add_user(self, handle: str) -> None:
        assert handle not in self.users
        self.users.add(handle)

    def are_friends(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.friendships

    def _make_friends(self, a: str, b: str) -> None:
        self.friendships.add(frozenset((a, b)))
        self.requests.discard((a, b))
        self.requests.discard((b, a))

    def request(self, me: str, to: str) -> Literal["pending", "accepted"]:
        """POST /friend-requests {"to": to} by `me` (never to oneself)."""
        assert me != to
        if self.are_friends(me, to):
            return "accepted"
        if (to, me) in self.requests:
            self._make_friends(me, to)
            return "accepted"
        self.requests.add((me, to))
        return "pending"

    def accept(self, me: str, requester: str) -> bool:
        """POST /friend-requests/{requester}/accept by `me`; False means 404."""
        if (requester, me) not in self.requests:
            return False
        self._make_friends(me, requester)
        return True

    def withdraw(self, me: str, other: str) -> None:
        """DELETE /friend-requests/{other}: declines or cancels, whichever direction exists."""
        self.requests.discard((me, other))
        self.requests.discard((other, me))

    def unfriend(self, a: str, b: str) -> None:
        self.friendships.discard(frozenset((a, b)))

    # -- statuses ------------------------------------------------------------------------------
    def post(self, author: str) -> int:
        number = self.next_number
        self.next_number += 1
        self.statuses[number] = author
        return number

    def delete(self, number: int) -> None:
        del self.statuses[number]

    def statuses_of(self, author: str) -> list[int]:
        return sorted(n for n, a in self.statuses.items() if a == author)

    # -- the one rule that matters -------------------------------------------------------------
    def timeline(self, user: str) -> list[int]:
        """The TIMELINE_MAX newest existing statuses by `user` or a current friend, newest first."""
        visible = [
            n
            for n, author in self.statuses.items()
            if author == user or self.are_friends(user, author)
        ]
        return sorted(visible, reverse=True)[: self.max_items]

    def allowed(self, user: str) -> set[int]:
        """What any read by `user` may show or count at this moment, however far behind the
        worker is: statuses that exist, by `user` or a current friend. Additions may lag (a read
        may show less than `timeline`), removals never do (it may show nothing else)."""
        return {
            n
            for n, author in self.statuses.items()
            if author == user or self.are_friends(user, author)
        }

    # -- activity ------------------------------------------------------------------------------
    def read(self, user: str) -> None:
        """GET /timeline or /timeline/unread_count by `user`."""
        self.last_read[user] = self.today

    def advance(self, days: int) -> None:
        self.today += days

    def away(self, user: str) -> bool:
        """Whether `user` last read more than `active_days` ago (no fan-out for them)."""
        last = self.last_read.get(user)
        return last is not None and self.today - last > self.active_days

    # -- read markers --------------------------------------------------------------------------
    def mark(self, user: str, number: int) -> tuple[int, int] | None:
        """POST /markers without a version: the marker only moves forward, and each move
        increments its version. Returns the marker after (number, version), or None for a
        position past the newest status that exists (422 `marker_ahead`, nothing changes): a
        deleted status is a fine position only below it."""
        if number > max(self.statuses, default=-1):
            return None
        last, version = self.markers.get(user, (-1, 0))
        if number > last:
            self.markers[user] = (number, version + 1)
        return self.markers[user]

    def unread(self, user: str) -> tuple[int, bool]:
        """GET /timeline/unread_count: the timeline's items newer than the marker."""
        last = self.markers.get(user, (-1, 0))[0]
        count = sum(n > last for n in self.timeline(user))
        return count, count >= self.max_items
