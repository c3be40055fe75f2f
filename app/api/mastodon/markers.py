"""`GET`/`POST /api/v1/markers`, home only, over app.domain.markers. Mastodon's clients send no
version,
so a move here is the native unversioned move: forward only, 200 with the stored marker when
the id is not newer (the native API keeps its versioned 409s for clients that send one)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.api.mastodon.params import ID_PATTERN, body, list_param
from app.domain import markers
from app.domain.errors import ValidationFailed
from app.domain.oauth import require_scope
from app.domain.users import Account

TIMELINES = ("home",)


class MarkerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    last_read_id: str = Field(pattern=ID_PATTERN, description="a status id")


class SetMarkers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: MarkerIn | None = None
    notifications: dict[str, Any] | None = Field(
        default=None, description="refused (422): this service has no notifications"
    )


class MarkerOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    last_read_id: str
    version: int
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class MarkersOut(RootModel[dict[str, MarkerOut]]):
    pass


def _json(home: markers.HomeMarker | None) -> Payload:
    return {} if home is None else {"home": home.json()}


async def get_markers(request: Request, me: Account) -> Payload:
    """`timeline[]` names the markers wanted (all when none); only home exists here."""
    require_scope(me, "read:statuses")
    wanted = list_param(request, "timeline")
    if wanted and "home" not in wanted:
        return {}
    return _json(await markers.get_home(context(request).store, me.id))


async def set_markers(request: Request, me: Account) -> Payload:
    require_scope(me, "write:statuses")
    data = await body(request, SetMarkers)
    if data.notifications is not None:
        raise ValidationFailed("notifications: this service has no notifications")
    if data.home is None:
        raise ValidationFailed("home: the home marker is required")
    home = await markers.move_home(
        context(request).database, me.id, ObjectId(data.home.last_read_id.lower()), None
    )
    return _json(home)
