"""Users and bearer tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.errors import Conflict, NotFound, Unauthorized
from app.models import Friendship, User

# 32 random bytes: guessing is hopeless, so a fast hash (sha256) is enough to store; a slow
# password hash would only add latency to every request.
TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def id_of(user: User) -> ObjectId:
    """The id of a user read from the database (only a never-saved `User` has none)."""
    assert user.id is not None
    return user.id


async def create_user(handle: str, display_name: str | None) -> tuple[User, str]:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    user = User(handle=handle, display_name=display_name, token_hash=hash_token(token))
    try:
        await user.insert()
    except DuplicateKeyError:
        raise Conflict(f"the handle {handle!r} is taken", code="handle_taken") from None
    return user, token


async def authenticate(token: str) -> User:
    digest = hash_token(token)
    user = await User.find_one(User.token_hash == digest)
    # The lookup is by hash, so timing reveals nothing about the token; compare anyway.
    if user is None or not hmac.compare_digest(user.token_hash, digest):
        raise Unauthorized("the bearer token is invalid", code="invalid_token")
    return user


async def by_handle(handle: str) -> User:
    user = await User.find_one(User.handle == handle)
    if user is None:
        raise NotFound(f"no user {handle!r}", code="user_not_found")
    return user


async def friend_count(user_id: ObjectId) -> int:
    return await Friendship.get_pymongo_collection().count_documents({"user_id": user_id})


async def handles_by_id(ids: list[ObjectId]) -> dict[ObjectId, User]:
    users = await User.find({"_id": {"$in": ids}}).to_list()
    return {u.id: u for u in users if u.id is not None}
