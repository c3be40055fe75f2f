"""Accounts: verify_credentials, by id, lookup, search (exact local username) and
relationships."""

from __future__ import annotations

from starlette.requests import Request

from app.api.deps import context
from app.api.endpoint import Body, Payload
from app.api.mastodon import entities
from app.api.mastodon.params import list_param, path_id
from app.cursors import parse_id
from app.domain import users
from app.domain.errors import BadRequest, NotFound
from app.domain.oauth import require_scope
from app.domain.users import Account

# Ids per relationships request: a client asks for a screenful; each id costs three look-ups.
MAX_RELATIONSHIP_IDS = 40
# Longest search query read: a handle is at most 30 characters, an @-qualified one a few more.
MAX_QUERY_CHARS = 200
SEARCH_TYPES = ("accounts", "statuses", "hashtags")


async def verify_credentials(request: Request, me: Account) -> Payload:
    require_scope(me, "read:accounts")
    return await entities.credential_account(context(request), request, me)


async def _user(request: Request) -> Account:
    oid = path_id(request)
    user = await users.by_id(context(request).store, oid)
    if user is None:
        raise NotFound("Record not found")
    return user


async def get_account(request: Request, me: Account) -> Payload:
    require_scope(me, "read:accounts")
    return await entities.account(context(request), request, await _user(request))


def _local_handle(text: str, host: str) -> str:
    """`alice`, `@alice` or `alice@<this host>` as the handle `alice`; anything else as is
    (no account of another server is known here)."""
    name = text.strip().lstrip("@")
    user, at, domain = name.partition("@")
    return user if at and domain == host else name


async def lookup(request: Request, me: Account) -> Payload:
    require_scope(me, "read:accounts")
    acct = request.query_params.get("acct")
    if not acct:
        raise BadRequest("acct is required", code="missing_parameter")
    handle = _local_handle(acct[:MAX_QUERY_CHARS], request.url.netloc)
    try:
        user = await users.by_handle(context(request).store, handle)
    except NotFound:
        raise NotFound("Record not found") from None
    return await entities.account(context(request), request, user)


async def search(request: Request, me: Account) -> Payload:
    """Accounts whose handle is exactly the query (as `@handle` or `handle@<this host>` too);
    statuses and hashtags are never found (`type` other than accounts gets empty lists)."""
    require_scope(me, "read:search")
    q = request.query_params.get("q")
    if q is None:
        raise BadRequest("q is required", code="missing_parameter")
    kind = request.query_params.get("type")
    if kind is not None and kind not in SEARCH_TYPES:
        raise BadRequest(f"type must be one of {', '.join(SEARCH_TYPES)}", code="invalid_type")
    found: list[Payload] = []
    if kind in (None, "accounts") and q.strip():
        handle = _local_handle(q[:MAX_QUERY_CHARS], request.url.netloc)
        doc = await context(request).store.users.find_one({"handle": handle})
        if doc is not None:
            found.append(await entities.account(context(request), request, Account.from_doc(doc)))
    return {"accounts": found, "statuses": [], "hashtags": []}


async def relationships(request: Request, me: Account) -> Body:
    require_scope(me, "read:follows")
    ids = list_param(request, "id")
    if len(ids) > MAX_RELATIONSHIP_IDS:
        raise BadRequest(f"at most {MAX_RELATIONSHIP_IDS} ids", code="too_many_ids")
    out: list[Payload] = []
    ctx = context(request)
    for raw in ids:
        oid = parse_id(raw) if len(raw) == 24 else None
        # Unknown or malformed ids are left out, as Mastodon leaves out accounts it lacks.
        if oid is not None and await users.by_id(ctx.store, oid) is not None:
            out.append(await entities.relationship_with(ctx, me, oid))
    return out
