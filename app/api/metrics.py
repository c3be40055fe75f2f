"""HTTP metrics and GET /metrics (Prometheus text format, prometheus-client).

Requests are labelled by route *template* (`/statuses/{id}`), never by raw path, so label
cardinality is bounded by the endpoint table: a client cannot create series by inventing
paths. Paths that match no route share the label `unmatched`.
"""

from __future__ import annotations

import hmac
import ipaddress
import time

import pymongo
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import context
from app.api.errors import error_response
from app.api.health import backlog_authors
from app.api.throttle import request_ip
from app.metrics import BACKLOG_AUTHOR_EVENTS, DEAD_EVENTS, OLDEST_PENDING_AGE, PENDING_EVENTS
from app.settings import Settings

UNMATCHED = "unmatched"
# A scrape waits at most this long for the database (Prometheus' default scrape timeout is 10 s).
SCRAPE_DB_TIMEOUT_S = 2.0
# Latency buckets in seconds: a page read on mongod takes a few ms, a fan-out post tens of ms,
# and anything near the 15 s database timeout (app.storage.db) is an outage.
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


def metrics_allowed(request: Request, settings: Settings) -> bool:
    """METRICS_TOKEN and METRICS_ALLOW: with either set, a scrape must bring that bearer token
    or come from one of those addresses (the client address of the rate limits, so behind a
    proxy it is the TRUSTED_PROXY_HOPS entry); with neither, /metrics is open (restrict it at
    the proxy then, docs/security.md)."""
    token, allow = settings.metrics_token, settings.metrics_allow.strip()
    if not token and not allow:
        return True
    if token:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            sent.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
        ):
            return True
    address = request_ip(request, settings.trusted_proxy_hops)
    if allow and address is not None:
        return any(address in net for net in allow_list(allow))
    return False


def allow_list(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """METRICS_ALLOW's addresses and CIDR blocks (ValueError names a bad one)."""
    return [ipaddress.ip_network(a.strip(), strict=False) for a in spec.split(",") if a.strip()]


async def metrics_endpoint(request: Request) -> Response:
    """Refresh the gauges that are read from the database (the backlog: pending, the oldest
    pending event's age, dead, and the authors with the most waiting), then render every
    metric. A scrape during an outage still answers (the gauges keep their last values)."""
    if not metrics_allowed(request, context(request).settings):
        return error_response(403, "forbidden", "the metrics are restricted to operators")
    ctx = context(request)
    try:
        with pymongo.timeout(SCRAPE_DB_TIMEOUT_S):
            backlog = await ctx.queue.reader.backlog()
            top = await backlog_authors(ctx)
        PENDING_EVENTS.set(float(str(backlog["pending_events"])))
        OLDEST_PENDING_AGE.set(float(str(backlog["oldest_pending_age_s"] or 0)))
        DEAD_EVENTS.set(float(str(backlog["dead_events"])))
        # Only the current top: series of authors who left it end (bounded cardinality).
        BACKLOG_AUTHOR_EVENTS.clear()
        for handle, n in top:
            BACKLOG_AUTHOR_EVENTS.labels(handle).set(n)
    except PyMongoError:
        pass
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
