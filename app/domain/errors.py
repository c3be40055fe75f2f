"""Domain errors: one base class. They say what went wrong (a machine-readable `code` and a
message), never how a transport reports it: the HTTP mapping lives in app.api.errors."""

from __future__ import annotations


class DomainError(Exception):
    """An error the client can act on."""

    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(DomainError):
    code = "bad_request"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    """The caller is known but their token does not allow this (a Mastodon API token's scopes,
    app.domain.oauth)."""

    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class ValidationFailed(DomainError):
    code = "validation_failed"


class Unavailable(DomainError):
    code = "database_unavailable"
