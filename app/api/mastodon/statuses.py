"""Statuses: post (form or JSON, `Idempotency-Key` honoured), read, delete, over
app.domain.statuses.

What this service cannot do is refused, never dropped: media, polls, replies, content warnings,
scheduling, and any visibility but `private` (a status is seen by its author's friends) are
422 when given non-empty. `language` is accepted and not stored (Mastodon may drop it too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.api.mastodon import entities
from app.api.mastodon.params import body
from app.api.parsing import idempotency_key
from app.api.schemas import MAX_TEXT_CHARS
from app.domain import statuses
from app.domain.errors import ValidationFailed
from app.domain.oauth import require_scope
from app.domain.users import Account

# ISO 639 codes are 2–3 letters; a locale tag such as "zh-Hant" a few more.
MAX_LANGUAGE_CHARS = 16
MAX_FIELD_CHARS = 1000


class PostStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    visibility: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    sensitive: bool = False
    spoiler_text: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    language: str | None = Field(default=None, max_length=MAX_LANGUAGE_CHARS)
    media_ids: list[str] | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    in_reply_to_id: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    scheduled_at: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    poll: dict[str, Any] | None = None
    content_type: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)


def _refuse_unsupported(data: PostStatus) -> None:
    if data.media_ids:
        raise ValidationFailed("media_ids: this service has no media attachments")
    if data.poll is not None:
        raise ValidationFailed("poll: this service has no polls")
    if data.in_reply_to_id:
        raise ValidationFailed("in_reply_to_id: this service has no replies")
    if data.scheduled_at:
        raise ValidationFailed("scheduled_at: this service does not schedule statuses")
    if data.spoiler_text or data.sensitive:
        raise ValidationFailed("spoiler_text, sensitive: this service has no content warnings")
    if data.visibility not in (None, "", entities.VISIBILITY):
        raise ValidationFailed(
            "visibility: every status is private (seen by its author's friends only)"
        )
    if data.content_type not in (None, "", "text/plain"):
        raise ValidationFailed("content_type: statuses are plain text (text/plain)")


async def _entity(request: Request, native: dict[str, Any], *, with_text: bool = False) -> Payload:
    """A status entity from the native status object (app.domain.statuses.status_json)."""
    ctx = context(request)
    created = datetime.fromisoformat(native["created_at"].replace("Z", "+00:00"))
    [out] = await entities.statuses(
        ctx, request, [(ObjectId(native["id"]), native["author"], native["text"], created)]
    )
    if with_text:
        out["text"] = native["text"]
    return out


async def post_status(request: Request, me: Account) -> Payload:
    """200 with the status, for a new one and for a replay of the same Idempotency-Key alike
    (Mastodon does not tell them apart)."""
    require_scope(me, "write:statuses")
    key = idempotency_key(request)
    data = await body(request, PostStatus)
    _refuse_unsupported(data)
    native, _ = await statuses.post(context(request), me, data.status, key)
    return await _entity(request, native)


async def get_status(request: Request, me: Account) -> Payload:
    require_scope(me, "read:statuses")
    native = await statuses.get(context(request), me, request.path_params["id"])
    return await _entity(request, native)


async def delete_status(request: Request, me: Account) -> Payload:
    """The deleted status, with its `text` (clients offer to redraft it), as Mastodon answers."""
    require_scope(me, "write:statuses")
    ctx = context(request)
    status_id = request.path_params["id"]
    native = await statuses.get(ctx, me, status_id)
    await statuses.delete(ctx, me, status_id)
    return await _entity(request, native, with_text=True)
