"""HTTP metrics and GET /metrics (Prometheus text format, prometheus-client).

Requests are labelled by route *template* (`/statuses/{id}`), never by raw path, so label
cardinality is bounded by the endpoint table: a client cannot create series by inventing
paths. Paths that match no route share the label `unmatched`.
"""

from __future__ import annotations

import time

import pymongo
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import context
from app.metrics import DEAD_EVENTS, OLDEST_PENDING_AGE, PENDING_EVENTS

UNMATCHED = "unmatched"
# A scrape waits at most this long for the database (Prometheus' default scrape timeout is 10 s).
SCRAPE_DB_TIMEOUT_S = 2.0
# Latency buckets in seconds: a page read on mongod takes a few ms, a fan-out post tens of ms,
# and anything near the 15 s database timeout (app.db) is an outage.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
# The methods we serve; anything else is counted as OTHER (bounded cardinality again).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "timeline_http_requests_total",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "timeline_http_request_duration_seconds",
    "Time from request start to the end of the response, by method, route template and status",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streaming bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before starting a response

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router stores the matched route in the scope (Starlette >= 0.x `scope["route"]`).
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            labels = (method, template, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - start)


async def metrics_endpoint(request: Request) -> Response:
    """Refresh the gauges that are read from the database (the backlog: pending, the oldest
    pending event's age, dead), then render every metric. A scrape during an outage still
    answers (the gauges keep their last values)."""
    try:
        with pymongo.timeout(SCRAPE_DB_TIMEOUT_S):
            backlog = await context(request).queue.backlog()
        PENDING_EVENTS.set(float(str(backlog["pending_events"])))
        OLDEST_PENDING_AGE.set(float(str(backlog["oldest_pending_age_s"] or 0)))
        DEAD_EVENTS.set(float(str(backlog["dead_events"])))
    except PyMongoError:
        pass
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
