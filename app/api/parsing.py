"""Turning a request into validated values, or into a clear 4xx. Nothing is written before this."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from bson import ObjectId
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from app import cursors
from app.api.schemas import MAX_IDEMPOTENCY_KEY_CHARS
from app.domain.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)

# Largest request body. The biggest valid body is a 5,000-character status; escaped as
# \uXXXX\uXXXX surrogate pairs that is 60 KB of JSON. Anything larger is refused unread.
MAX_BODY_BYTES = 64 * 1024
# Page sizes: the contract's 1–100, default 20.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# A limit is at most this many digits ("0000000000000020" is still 20); longer is refused.
MAX_LIMIT_DIGITS = 16
# The shape of every cursor we issue: unpadded urlsafe base64 of "v1:" + a 24-hex-digit id
# (27 bytes, 36 characters). Documented in the OpenAPI document; decoding checks the rest.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{36}$"


def _is_decimal(value: str) -> bool:
    return value.isascii() and value.isdigit()


def check_query(request: Request, allowed: frozenset[str]) -> None:
    """Refuse unknown and repeated query parameters: a typo (`?befor=`) would otherwise be
    silently ignored, and a repeated one (`?limit=1&limit=500`) read differently by a proxy and
    by us (parameter pollution)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name[:40]!r}", code="unknown_parameter")
        if name in seen:
            raise BadRequest(f"query parameter {name!r} given twice", code="repeated_parameter")
        seen.add(name)


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _is_decimal(declared):
            raise BadRequest("Content-Length is not a number", code="bad_content_length")
        # Compared by length first: int() of thousands of digits raises (CPython's 4,300-digit
        # cap), and any number that long is over the limit anyway.
        if len(declared.lstrip("0")) > len(str(MAX_BODY_BYTES)) or int(declared) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Gone before its body was whole (or closed by `timeline serve`'s request timeout): no
        # answer reaches it, and it is no server error to log.
        raise BadRequest("the client went away", code="client_disconnected") from None
    return b"".join(chunks)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook refusing a key given twice: `{"to": "a", "to": "b"}` would be "b" to us
    (last wins) and perhaps "a" to a filtering proxy in front."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


async def json_body(request: Request, model: type[M]) -> M:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await read_body(request)
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise ValidationFailed(
            f"the key {exc.key[:40]!r} is given twice", code="duplicate_key"
        ) from None
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="malformed_json") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(f"{where}: {first['msg']}") from None


def limit_param(request: Request, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    # ASCII digits only (str.isdigit() also accepts "１" and "²"), and short enough for int().
    if not _is_decimal(raw) or len(raw) > MAX_LIMIT_DIGITS or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}", code="invalid_limit")
    return int(raw)


def cursor_param(request: Request, name: str) -> ObjectId | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    return cursors.decode(raw, param=name)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise BadRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            code="invalid_idempotency_key",
        )
    return key
