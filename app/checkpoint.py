"""Progress of a long event handler, saved as it goes so that a crashed one resumes mid-way.

The worker (fanout/) sets `current` while it applies an event; a handler that writes in batches
(receiver_copies' fan-out) skips what `resume_after` says is done and calls `save` after each
batch. Outside the worker (tests calling handlers directly, rebuilds) there is no checkpoint and
handlers simply do all the work. Saving is also the worker's fence: `save` raises if the event's
lease was lost, so a worker that stalled past its lease stops writing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from bson import ObjectId


@dataclass(frozen=True)
class Checkpoint:
    resume_after: ObjectId | None
    save: Callable[[ObjectId], Awaitable[None]]


current: ContextVar[Checkpoint | None] = ContextVar("checkpoint", default=None)
