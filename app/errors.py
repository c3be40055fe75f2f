"""Domain errors: one base class; the HTTP mapping lives in app.api.errors."""

from __future__ import annotations


class DomainError(Exception):
    """An error the client can act on. `status` is the HTTP status the API answers with."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(DomainError):
    status, code = 400, "bad_request"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class PayloadTooLarge(DomainError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DomainError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(DomainError):
    status, code = 422, "validation_failed"


class Unavailable(DomainError):
    status, code = 503, "database_unavailable"
