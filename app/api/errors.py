"""Every error becomes `{"error": {"code", "message"}}`: the one place errors meet HTTP."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.db import domain_error_from_pymongo
from app.errors import (
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
    Unavailable: 503,
}


def http_status(exc: DomainError) -> int:
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


def domain_error_response(exc: DomainError) -> JSONResponse:
    return error_response(http_status(exc), exc.code, exc.message)


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
