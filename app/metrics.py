"""Prometheus metrics (prometheus-client). Defined once here; the API and the worker update them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter(
    "timeline_events_applied_total", "Outbox events applied by the fanout worker", ["kind"]
)
EVENTS_FAILED = Counter(
    "timeline_events_failed_total", "Outbox event applications that raised", ["kind"]
)
EVENTS_DEAD = Counter(
    "timeline_events_dead_total", "Events parked as dead after too many attempts", ["kind"]
)
FANOUT_BATCH_SIZE = Histogram(
    "timeline_fanout_batch_size",
    "Entries per bulk write of a fan-out, backfill or rebuild",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
PENDING_EVENTS = Gauge("timeline_pending_events", "Events not yet applied, as of the last scrape")
BACKLOG_AUTHOR_EVENTS = Gauge(
    "timeline_backlog_author_events",
    "Events not yet applied of the authors with the most of them (the top few), by handle",
    ["author"],
)
OLDEST_PENDING_AGE = Gauge(
    "timeline_oldest_pending_event_age_seconds",
    "Age of the oldest event not yet applied (0 when none), as of the last scrape: an upper "
    "bound on how stale any timeline is. Past the service's capacity it grows steadily.",
)
DEAD_EVENTS = Gauge("timeline_dead_events", "Events parked as dead, as of the last scrape")
