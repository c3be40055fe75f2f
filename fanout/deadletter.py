"""Dead-lettered events for `timeline events`: listing them and putting them back in the queue.
The queue (app.queue) owns them; these names are what the command line calls."""

from __future__ import annotations

from app.queue import LIST_LIMIT, count, list_events
from app.queue import retry_dead as retry

__all__ = ["LIST_LIMIT", "count", "list_events", "retry"]
