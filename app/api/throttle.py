"""The rate limits at the edge: a pure ASGI middleware that counts each request against the rules
of app.limits.ratelimit before the application sees it, answers 429 when one is over, and reports
the
tightest counter in `X-RateLimit-*` on every counted response (as Mastodon does, so clients such
as Mastodon.py can pace themselves)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from pymongo.errors import PyMongoError
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, quota_headers, rate_limited_headers
from app.context import AppContext
from app.limits.ratelimit import (
    RateLimited,
    client_address,
    client_ip,
    rules_for,
    tightest,
    token_key,
)

log = logging.getLogger("timeline.api")

# A refused request is answered after this long (or its Retry-After, if sooner): a client that
# retries at once on many connections (the flood `benchmarks fair` sends) is held by sleeping
# tasks instead of keeping the event loop, which the in-process fanout worker shares, busy with
# 429s (light authors' fan-out waited 5.6 s, median, behind such a flood without it). A client
# that honours Retry-After loses nothing: it had to wait longer anyway.
REFUSAL_DELAY_S = 1.0
_sleep = asyncio.sleep  # (the tests count the delays)


def request_address(conn: HTTPConnection | Scope, trusted_hops: int) -> str:
    """The client address the limits key on (app.limits.ratelimit.client_address)."""
    return client_address(*_peer_and_forwarded(conn), trusted_hops)


def request_ip(
    conn: HTTPConnection | Scope, trusted_hops: int
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP (app.limits.ratelimit.client_ip), e.g. to match an allow-list."""
    return client_ip(*_peer_and_forwarded(conn), trusted_hops)


def _peer_and_forwarded(conn: HTTPConnection | Scope) -> tuple[str | None, list[str]]:
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    peer = scope.get("client")
    return (peer[0] if peer else None), Headers(scope=scope).getlist("x-forwarded-for")


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: AppContext | None = scope.get("state", {}).get("ctx")
        if scope["type"] != "http" or ctx is None or not ctx.limiter.enabled:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = _bearer(headers)
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        names = rules_for(method, scope["path"], token is not None)
        address = request_address(scope, ctx.settings.trusted_proxy_hops)
        rules = ctx.limiter.rules or {}
        hits = [
            (name, token_key(token) if token and rules[name].by == "token" else address)
            for name in names
        ]
        try:
            quota = tightest(await ctx.limiter.count(hits))
        except RateLimited as exc:
            await _sleep(min(REFUSAL_DELAY_S, exc.retry_after_s))
            response = error_response(429, exc.code, exc.message, rate_limited_headers(exc))
            await response(scope, receive, send)
            return
        except PyMongoError:
            # Fail open: the request meets the same outage and answers 503 itself (one line per
            # request, no traceback: an outage must not flood the log).
            log.warning("rate limits unavailable; request admitted")
            quota = None
        if quota is None:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in quota_headers(quota).items()]

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_quota)
