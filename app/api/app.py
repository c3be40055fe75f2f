"""`create_app(settings)`: the ASGI application and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.endpoint import Endpoint
from app.api.errors import EXCEPTION_HANDLERS
from app.api.headers import DefaultHeadersMiddleware
from app.api.mastodon import mastodon_routes
from app.api.metrics import MetricsMiddleware, metrics_endpoint
from app.api.openapi import build_openapi
from app.api.parsing import check_query
from app.api.routes import ENDPOINTS
from app.api.throttle import RateLimitMiddleware
from app.context import AppContext, build_context
from app.domain.users import TokenCache
from app.settings import Settings
from app.storage.db import connect
from app.web import web_routes

log = logging.getLogger("timeline.api")


class State(TypedDict):
    ctx: AppContext
    # Token look-ups this process remembers for a moment (app.domain.users.TokenCache).
    tokens: TokenCache


class Background(Protocol):
    """What the API runs beside its requests (the entry point passes the fanout worker)."""

    async def run(self) -> None:
        """Run until `handle_exit`, then return."""

    def handle_exit(self) -> None:
        """Ask `run` to finish its current work and return."""


def _dispatch(endpoints: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    allowed = {
        method: frozenset(p.name for p in ep.params if p.where == "query")
        for method, ep in endpoints.items()
    }

    async def endpoint(request: Request) -> Response:
        # HEAD is answered like GET (Starlette allows HEAD wherever GET is; no body is sent).
        method = "GET" if request.method == "HEAD" else request.method
        check_query(request, allowed[method])
        return await endpoints[method](request)

    return endpoint


def build_routes() -> list[Route]:
    """One route per path carrying all of its methods, so that a 405 lists every allowed method
    in `Allow` (one route per method would make Starlette list only the first route's)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    return [
        Route(path, _dispatch(endpoints), methods=list(endpoints))
        for path, endpoints in by_path.items()
    ]


def create_app(
    settings: Settings,
    *,
    embedded: bool = False,
    background: Callable[[AppContext], Background] | None = None,
) -> Starlette:
    """The API for `settings.mongodb_url` (required here: the CLI starts the embedded server and
    passes its URL). With `background`, what it builds from the context (the fanout worker) runs
    in the same event loop for the application's lifetime."""
    if settings.mongodb_url is None:
        raise ValueError("create_app needs settings.mongodb_url")
    url = settings.mongodb_url
    openapi = build_openapi()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        database = await connect(url, settings.mongodb_db, embedded=embedded)
        ctx = await build_context(settings, database)
        app.state.ctx = ctx
        tokens = app.state.tokens = TokenCache()
        service = background(ctx) if background is not None else None
        task = asyncio.create_task(service.run(), name="background") if service else None
        try:
            yield {"ctx": ctx, "tokens": tokens}
        finally:
            if service is not None and task is not None:
                service.handle_exit()
                await task
            await ctx.limiter.close()
            await database.close()

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(openapi)

    routes = build_routes()
    routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    # Operational, not part of the public API document: restrict it at the proxy (docs/security.md).
    routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    # The web client: HTML and assets, not part of the JSON API's OpenAPI document. The
    # Mastodon client API beside the native one (docs/mastodon.md).
    return Starlette(
        routes=[*routes, *mastodon_routes(), *web_routes()],
        # Outermost first: every response (a 429 included) gets the default headers and is
        # counted in the metrics; the rate limits run before routing, so a refused request
        # costs two round trips and no more.
        middleware=[
            Middleware(DefaultHeadersMiddleware),
            Middleware(MetricsMiddleware),
            Middleware(RateLimitMiddleware),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
