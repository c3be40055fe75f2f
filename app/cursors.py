"""Opaque cursors. Clients must not parse them; we may change the encoding behind a version tag."""

from __future__ import annotations

import base64
import binascii

from bson import ObjectId
from bson.errors import InvalidId

from app.domain.errors import BadRequest

_PREFIX = "v1:"


def encode(oid: ObjectId) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{oid}".encode()).decode().rstrip("=")


def decode(cursor: str, *, param: str = "cursor") -> ObjectId:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        if not raw.startswith(_PREFIX):
            raise ValueError(raw)
        oid = ObjectId(raw[len(_PREFIX) :])
        # The decoder skips characters outside the alphabet ("<cursor>!" would pass): accept
        # only the exact text we issue.
        if encode(oid) != cursor:
            raise ValueError(cursor)
        return oid
    except (ValueError, UnicodeError, binascii.Error, InvalidId):
        raise BadRequest(f"{param} is not a valid cursor", code="invalid_cursor") from None


def parse_id(value: str) -> ObjectId | None:
    """A public id (status or user) as an ObjectId, or None when it cannot be one of ours."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None
