"""The Mastodon client API's credentials (docs/mastodon.md): the unique partial index on
`users.email`, and the `oauth_apps` (unique `client_id`) and `access_tokens` (its `user_id`
index) collections (frozen copies of app/storage/models.py's `User` index and
app/storage/models_oauth.py's
documents). Failed logins are counted by the rate limiter (app.limits.ratelimit), which makes its
own
collection at start-up.

Forward creates what is missing (Beanie would create it at start-up; here the schema change is
explicit). No data moves: existing users have no e-mail or password and keep signing in with
their token. Backward drops the two collections (every Mastodon API token stops working, every
registered client is forgotten) and the e-mail index; the e-mails and password hashes stay on
the users (the previous version ignores them), so a forward again restores password sign-in.
"""

from __future__ import annotations

from typing import Any

from beanie import Document, free_fall_migration
from pymongo import ASCENDING, IndexModel

EMAIL_INDEX = IndexModel(
    [("email", ASCENDING)], unique=True, partialFilterExpression={"email": {"$exists": True}}
)
COLLECTIONS: dict[str, list[IndexModel]] = {
    "oauth_apps": [IndexModel([("client_id", ASCENDING)], unique=True)],
    "access_tokens": [IndexModel([("user_id", ASCENDING)])],
}


class User(Document):
    class Settings:
        name = "users"


class Forward:
    @free_fall_migration(document_models=[User])
    async def create_mastodon_credentials(self, session: Any) -> None:
        # Outside the runner's transaction (session unused): collection DDL inside a
        # multi-document transaction is refused by servers before 4.4, and a drop by all.
        db = User.get_pymongo_collection().database
        await db["users"].create_indexes([EMAIL_INDEX])
        existing = await db.list_collection_names()
        for name, indexes in COLLECTIONS.items():
            if name not in existing:
                await db.create_collection(name)
            await db[name].create_indexes(indexes)


class Backward:
    @free_fall_migration(document_models=[User])
    async def drop_mastodon_credentials(self, session: Any) -> None:
        db = User.get_pymongo_collection().database
        for name in COLLECTIONS:
            await db[name].drop()
        index_name = EMAIL_INDEX.document["name"]
        if index_name in await db["users"].index_information():
            await db["users"].drop_index(index_name)
