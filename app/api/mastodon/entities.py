"""Mastodon's entities as this service serves them (docs/mastodon.md lists the fields), built
from the domain's values (their response models are app.api.mastodon.schemas).

Every field Mastodon defines for these entities is present, with the value that is true here:
no media, mentions, boosts or favourites, so their lists are empty and their counts 0; every
account is `locked` (a follow is a request: friendship needs consent); every status is
`private` (its author's friends see it). Clients built on typed entities (toot's dataclasses)
need every key, and those that branch on a key's presence (toot on `scheduled_at`) need no
other.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

from bson import ObjectId
from starlette.requests import Request

from app.api.mastodon.avatar import AVATAR_PATH
from app.context import AppContext
from app.domain.users import Account
from app.storage.store import Collection
from app.timefmt import rfc3339

# Statuses of this service are seen by the author's friends only: Mastodon's "private".
VISIBILITY = "private"
_PARAGRAPHS = re.compile(r"\n\s*\n")


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def content_html(text: str) -> str:
    """The text as Mastodon's `content`: escaped, blank lines between paragraphs, single line
    breaks as <br />."""
    paragraphs = [p.strip("\n") for p in _PARAGRAPHS.split(text.replace("\r\n", "\n"))]
    return (
        "".join(f"<p>{html.escape(p).replace(chr(10), '<br />')}</p>" for p in paragraphs if p)
        or "<p></p>"
    )


def _account(base: str, user: Account, friends: int, statuses: int) -> dict[str, Any]:
    url = f"{base}/@{user.handle}"
    avatar = f"{base}{AVATAR_PATH}"
    return {
        "id": str(user.id),
        "username": user.handle,
        "acct": user.handle,
        "display_name": user.display_name or "",
        "locked": True,
        "bot": False,
        "group": False,
        "discoverable": False,
        "indexable": False,
        "noindex": True,
        "moved": None,
        "suspended": False,
        "limited": False,
        # Mastodon rounds an account's creation to the day; ours is exact.
        "created_at": rfc3339(user.created_at),
        "note": "",
        "url": url,
        "uri": url,
        "avatar": avatar,
        "avatar_static": avatar,
        "header": "",
        "header_static": "",
        # Friendship is mutual: each friend both follows and is followed.
        "followers_count": friends,
        "following_count": friends,
        "statuses_count": statuses,
        "last_status_at": None,
        "emojis": [],
        "fields": [],
    }


async def accounts(
    ctx: AppContext, request: Request, of: list[Account]
) -> dict[ObjectId, dict[str, Any]]:
    """Each account's entity, by user id. The counts are read from the truth (friendship edges
    and statuses), one grouped query each for the whole list over their `user_id` and
    `author_id` indexes, so a page costs two queries whatever its number of authors."""
    base = base_url(request)
    unique = list({u.id: u for u in of}.values())
    ids = [u.id for u in unique]
    friends = await _counts(ctx.store.friendships, "user_id", ids)
    statuses = await _counts(ctx.store.statuses, "author_id", ids)
    return {u.id: _account(base, u, friends.get(u.id, 0), statuses.get(u.id, 0)) for u in unique}


async def _counts(coll: Collection, field: str, ids: list[ObjectId]) -> dict[ObjectId, int]:
    if not ids:
        return {}
    pipeline: list[dict[str, Any]] = [
        {"$match": {field: {"$in": ids}}},
        {"$group": {"_id": f"${field}", "n": {"$sum": 1}}},
    ]
    return {d["_id"]: int(d["n"]) async for d in await coll.aggregate(pipeline)}


async def account(ctx: AppContext, request: Request, user: Account) -> dict[str, Any]:
    return (await accounts(ctx, request, [user]))[user.id]


async def credential_account(ctx: AppContext, request: Request, me: Account) -> dict[str, Any]:
    """verify_credentials' account: the caller's, with `source`."""
    pending = await ctx.store.friend_requests.count_documents({"to_id": me.id})
    return {
        **await account(ctx, request, me),
        "source": {
            "privacy": VISIBILITY,
            "sensitive": False,
            "language": None,
            "note": "",
            "fields": [],
            "follow_requests_count": int(pending),
        },
    }


def status(
    base: str,
    author: dict[str, Any],
    status_id: ObjectId,
    text: str,
    created_at: datetime,
    *,
    with_text: bool = False,
) -> dict[str, Any]:
    sid = str(status_id)
    return {
        "id": sid,
        "uri": f"{author['url']}/{sid}",
        "url": f"{author['url']}/{sid}",
        "created_at": rfc3339(created_at),
        "edited_at": None,
        "account": author,
        "content": content_html(text),
        "visibility": VISIBILITY,
        "sensitive": False,
        "spoiler_text": "",
        "media_attachments": [],
        "application": None,
        "mentions": [],
        "tags": [],
        "emojis": [],
        "reblogs_count": 0,
        "favourites_count": 0,
        "replies_count": 0,
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "reblog": None,
        "poll": None,
        "card": None,
        "language": None,
        "text": text if with_text else None,
        "favourited": False,
        "reblogged": False,
        "muted": False,
        "bookmarked": False,
        "pinned": False,
        "filtered": [],
    }


async def statuses(
    ctx: AppContext, request: Request, items: list[tuple[ObjectId, str, str, datetime]]
) -> list[dict[str, Any]]:
    """Statuses from (id, author handle, text, created_at), in the given order; their authors
    are read in one query. A status whose author is gone (never: users are not deleted) is
    left out."""
    handles = sorted({handle for _, handle, _, _ in items})
    found = [Account.from_doc(d) async for d in ctx.store.users.find({"handle": {"$in": handles}})]
    by_id = await accounts(ctx, request, found)
    by_handle = {u.handle: by_id[u.id] for u in found}
    base = base_url(request)
    return [
        status(base, by_handle[handle], sid, text, created)
        for sid, handle, text, created in items
        if handle in by_handle
    ]


def relationship(
    other_id: ObjectId, *, friends: bool, requested: bool, requested_by: bool
) -> dict[str, Any]:
    return {
        "id": str(other_id),
        "following": friends,
        "showing_reblogs": friends,
        "notifying": False,
        "languages": None,
        "followed_by": friends,
        "blocking": False,
        "blocked_by": False,
        "muting": False,
        "muting_notifications": False,
        "requested": requested,
        "requested_by": requested_by,
        "domain_blocking": False,
        "endorsed": False,
        "note": "",
    }


async def relationship_with(ctx: AppContext, me: Account, other_id: ObjectId) -> dict[str, Any]:
    """The caller's relationship with `other_id`, from the graph and the pending requests."""
    requests = ctx.store.friend_requests
    return relationship(
        other_id,
        friends=await ctx.graph.are_friends(me.id, other_id),
        requested=await requests.find_one({"from_id": me.id, "to_id": other_id}, {"_id": 1})
        is not None,
        requested_by=await requests.find_one({"from_id": other_id, "to_id": me.id}, {"_id": 1})
        is not None,
    )
