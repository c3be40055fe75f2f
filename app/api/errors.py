"""Every error becomes `{"error": {"code", "message"}}`: the one place errors meet HTTP."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.limits.ratelimit import Quota, RateLimited
from app.storage.db import domain_error_from_pymongo

log = logging.getLogger("timeline.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}

# The HTTP status of each domain error class. A subclass not listed answers with its nearest
# listed ancestor's status (DomainError itself: 400).
HTTP_STATUS: dict[type[DomainError], int] = {
    DomainError: 400,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def http_status(exc: DomainError) -> int:
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


def domain_error_response(exc: DomainError) -> JSONResponse:
    headers = rate_limited_headers(exc) if isinstance(exc, RateLimited) else None
    return error_response(http_status(exc), exc.code, exc.message, headers)


def quota_headers(quota: Quota) -> dict[str, str]:
    """`X-RateLimit-*` of one counter; the reset is an RFC 3339 time, as Mastodon sends it
    (Mastodon.py parses it)."""
    reset = datetime.fromtimestamp(quota.reset_at, UTC)
    return {
        "X-RateLimit-Limit": str(quota.rule.limit),
        "X-RateLimit-Remaining": str(quota.remaining),
        "X-RateLimit-Reset": reset.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def rate_limited_headers(exc: RateLimited) -> dict[str, str]:
    """A 429's headers: `Retry-After` in seconds, and the refusing rule's counter."""
    quota = Quota(exc.rule, exc.rule.limit + 1, exc.reset_at)
    return {"Retry-After": str(exc.retry_after_s), **quota_headers(quota)}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    extra = dict(headers or {})
    if status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=extra or None
    )


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return domain_error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    # Keep Starlette's headers: a 405 must say which methods are allowed (`Allow`, RFC 9110).
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PyMongoError)
    mapped = domain_error_from_pymongo(exc)
    if mapped is not None:
        return domain_error_response(mapped)
    log.exception("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


EXCEPTION_HANDLERS = {
    DomainError: domain_error,
    HTTPException: http_error,
    PyMongoError: database_error,
    Exception: unexpected_error,
}
