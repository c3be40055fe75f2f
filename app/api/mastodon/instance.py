"""`GET /api/v1/instance` and `GET /api/v2/instance`: what a client reads before it logs in
(Mastodon.py reads `version` and `api_versions`; toot the v1 entity, `uri` naming its config).
Both must answer: Mastodon.py's version check retries without end when they fail."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Payload
from app.api.mastodon.avatar import AVATAR_PATH
from app.api.mastodon.entities import base_url
from app.api.schemas import MAX_TEXT_CHARS

# The Mastodon release whose client API this subset follows, and its API version
# (`api_versions.mastodon`, which Mastodon 4.3 introduced at 2).
MASTODON_COMPATIBLE = "4.3.0"
MASTODON_API_VERSION = 2
TITLE = "timeline-service"
DESCRIPTION = (
    "A social timeline on MongoDB. Friendship is mutual and needs consent: following someone "
    "sends a friend request. No media, boosts, mentions, notifications or streaming."
)


def service_version() -> str:
    try:
        return version("timeline-service")
    except PackageNotFoundError:
        return "0"


def version_string() -> str:
    return f"{MASTODON_COMPATIBLE} (compatible; {TITLE} {service_version()})"


class InstanceOut(BaseModel):
    """Mastodon's instance entity (v1 or v2); docs/mastodon.md lists what is served."""

    model_config = ConfigDict(extra="allow")
    version: str
    title: str


_STATUSES = {"max_characters": MAX_TEXT_CHARS, "max_media_attachments": 0,
             "characters_reserved_per_url": 23}  # fmt: skip
_MEDIA = {"supported_mime_types": [], "image_size_limit": 0, "image_matrix_limit": 0,
          "video_size_limit": 0, "video_frame_rate_limit": 0, "video_matrix_limit": 0}  # fmt: skip
_POLLS = {"max_options": 0, "max_characters_per_option": 0, "min_expiration": 0,
          "max_expiration": 0}  # fmt: skip


async def instance_v1(request: Request) -> Payload:
    store = context(request).store
    users = await store.users.estimated_document_count()
    statuses = await store.statuses.estimated_document_count()
    out: dict[str, Any] = {
        "uri": request.url.netloc,
        "title": TITLE,
        "short_description": DESCRIPTION,
        "description": DESCRIPTION,
        "email": "",
        "version": version_string(),
        "urls": {"streaming_api": ""},
        "stats": {"user_count": users, "status_count": statuses, "domain_count": 1},
        "thumbnail": None,
        "languages": ["en"],
        "registrations": True,
        "approval_required": False,
        "invites_enabled": False,
        "configuration": {
            "accounts": {"max_featured_tags": 0},
            "statuses": _STATUSES,
            "media_attachments": _MEDIA,
            "polls": _POLLS,
        },
        "contact_account": None,
        "rules": [],
    }
    return out


async def instance_v2(request: Request) -> Payload:
    store = context(request).store
    users = await store.users.estimated_document_count()
    base = base_url(request)
    return {
        "domain": request.url.netloc,
        "title": TITLE,
        "version": version_string(),
        "source_url": "",
        "description": DESCRIPTION,
        "usage": {"users": {"active_month": users}},
        "thumbnail": {"url": f"{base}{AVATAR_PATH}"},
        "languages": ["en"],
        "configuration": {
            "urls": {"streaming": ""},
            "accounts": {"max_featured_tags": 0, "max_pinned_statuses": 0},
            "statuses": _STATUSES,
            "media_attachments": _MEDIA,
            "polls": _POLLS,
            "translation": {"enabled": False},
        },
        "registrations": {"enabled": True, "approval_required": False, "message": None},
        "api_versions": {"mastodon": MASTODON_API_VERSION},
        "contact": {"email": "", "account": None},
        "rules": [],
    }
