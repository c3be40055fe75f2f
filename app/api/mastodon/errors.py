"""Errors as Mastodon's clients read them, and the dispatch of the Mastodon routes.

Mastodon answers `{"error": "<message for people>"}` on its API and OAuth 2's
`{"error": "<code>", "error_description": "<message>"}` under /oauth; registration adds
`details` per field. The HTTP statuses are the native API's table (app.api.errors) plus this
API's own: 403 (a scope the token lacks); 429 (a rate limit, failed logins included) carries
the same headers as on the native API. Every error a handler raises
is rendered here, so nothing under /api/v1, /api/v2 or /oauth answers in the native shape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.endpoint import Endpoint
from app.api.errors import HTTP_STATUS, rate_limited_headers
from app.domain.errors import DomainError, ValidationFailed
from app.domain.oauth import InvalidClient, OAuthError
from app.limits.ratelimit import RateLimited
from app.storage.db import domain_error_from_pymongo

log = logging.getLogger("timeline.api.mastodon")

STATUS: dict[type[DomainError], int] = {
    **HTTP_STATUS,
    OAuthError: 400,
    InvalidClient: 401,
}


class RegistrationFailed(ValidationFailed):
    """422 with Mastodon's per-field `details` (`ERR_TAKEN`, `ERR_INVALID`, ...)."""

    def __init__(self, field: str, error: str, description: str) -> None:
        super().__init__(f"Validation failed: {field.capitalize()} {description}")
        self.details = {field: [{"error": error, "description": description}]}


class MastodonError(BaseModel):
    """Mastodon's error body."""

    model_config = ConfigDict(extra="forbid")
    error: str
    error_description: str | None = None
    details: dict[str, list[dict[str, str]]] | None = None


def status_of(exc: DomainError) -> int:
    return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)


def render(exc: DomainError, path: str) -> JSONResponse:
    status = status_of(exc)
    body: dict[str, Any]
    if path.startswith("/oauth/"):
        body = {"error": exc.code, "error_description": exc.message}
    else:
        body = {"error": exc.message}
    if isinstance(exc, RegistrationFailed):
        body["details"] = exc.details
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if isinstance(exc, RateLimited):  # Retry-After and X-RateLimit-*, as every limit
        headers.update(rate_limited_headers(exc))
    return JSONResponse(body, status_code=status, headers=headers or None)


def not_found(message: str = "Record not found") -> JSONResponse:
    return JSONResponse({"error": message}, status_code=404)


def dispatch(endpoints: Mapping[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    """One path's methods. Query parameters are not checked against a list, unlike the native
    API: Mastodon ignores those it does not know, and its clients send optional ones freely
    (`exclude_unreviewed`, `with_suspended`). Those this API reads are validated."""
    allowed = ", ".join(sorted({*endpoints, "HEAD"} if "GET" in endpoints else endpoints))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        ep = endpoints.get(method)
        if ep is None:
            return JSONResponse(
                {"error": "Method not allowed"}, status_code=405, headers={"Allow": allowed}
            )
        try:
            return await ep(request)
        except DomainError as exc:
            return render(exc, request.url.path)
        except PyMongoError as exc:
            mapped = domain_error_from_pymongo(exc)
            if mapped is None:
                raise
            return render(mapped, request.url.path)

    return endpoint


async def unknown_endpoint(request: Request) -> Response:
    """Any other path under /api/ and /oauth/: Mastodon's 404, so a client probing for an
    endpoint this service lacks gets the answer it expects."""
    return not_found()
