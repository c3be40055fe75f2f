"""The shard plan (docs/scaling.md) as a table, and `timeline shard`, which applies it on a mongos.

Every collection is either sharded on the key of the documents one request or one handler
touches together (the owner of a timeline, the author of statuses, the user of an edge), hashed
because those ids are ObjectIds that grow with time (a ranged key would send every new user to
the last chunk), or left unsharded on the database's primary shard when it is small and looked
up by more than one unique key. `timeline shard` creates the model indexes and the shard-key
indexes, then shards each planned collection; it is idempotent and prints what it did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pymongo import IndexModel

from app.storage.models import DOCUMENT_MODELS
from app.storage.shard_plan import ShardPlan

# The core collections; each strategy's own rows come with its registration (`plan`).
CORE_PLAN: tuple[ShardPlan, ...] = (
    ShardPlan(
        "users",
        None,
        "looked up by three unique keys (_id, handle, token_hash): no one shard key prefixes "
        "all three unique indexes; one small document per user",
    ),
    ShardPlan(
        "friend_requests",
        None,
        "pending requests only (deleted on accept), read by sender and by receiver; small",
    ),
    ShardPlan(
        "friendships",
        (("user_id", "hashed"),),
        "a user's edges together: friend lists and are-friends checks hit one shard",
    ),
    ShardPlan(
        "statuses",
        (("author_id", "hashed"), ("_id", 1)),
        "an author's statuses together (posts, window floors, backfills hit one shard); _id "
        "as suffix so that a prolific author's range can still be split",
    ),
    ShardPlan(
        "events",
        (("_id", "hashed"),),
        "even write spread; every update of an event after its claim is by _id",
    ),
    ShardPlan("author_leases", (("_id", "hashed"),), "_id is the author: acquire is targeted"),
    ShardPlan("service_config", None, "one document"),
    ShardPlan(
        "idempotency_keys",
        (("user_id", "hashed"),),
        "the unique (user_id, key) index is prefixed by the shard key, so it stays enforced",
    ),
    ShardPlan(
        "markers",
        (("_id", "hashed"),),
        "_id is the user: every read and conditional update of a marker is targeted",
    ),
    ShardPlan(
        "user_activity",
        (("_id", "hashed"),),
        "_id is the user: a read's look-up and update are targeted; /health's count of "
        "inactive users is a broadcast over the last_read_at index",
    ),
    ShardPlan(
        "revocations",
        (("_id", 1),),
        "removals in flight only (settled by the worker): a page's look-up is an $in of exact "
        "_id keys and the unread count's a range of them, both targeted by a ranged _id key",
    ),
    ShardPlan(
        "oauth_apps",
        None,
        "client applications: a few per client program, looked up by client_id; small",
    ),
    ShardPlan(
        "access_tokens",
        (("_id", "hashed"),),
        "_id is the token's hash: the look-up of every Mastodon API request is targeted",
    ),
)


def plan() -> tuple[ShardPlan, ...]:
    """The whole plan: the core collections' rows and every registered strategy's."""
    from app.strategies import specs

    return (*CORE_PLAN, *(row for spec in specs() for row in spec.shards))


def plan_by_collection() -> dict[str, ShardPlan]:
    return {p.collection: p for p in plan()}


def model_indexes() -> dict[str, list[IndexModel]]:
    """Every declared collection with the indexes its model declares. (A strategy's own indexes,
    TimelineStrategy.ensure_indexes, are created by the strategy at start-up, through mongos
    like any other; none is unique, so none constrains the shard key.)"""
    out: dict[str, list[IndexModel]] = {}
    for model in DOCUMENT_MODELS:
        settings = model.Settings
        out[settings.name] = [
            i for i in getattr(settings, "indexes", []) if isinstance(i, IndexModel)
        ]
    return out


class Commands(Protocol):
    """What `timeline shard` needs of a connection: run one command on one database."""

    async def command(self, db: str, cmd: Mapping[str, Any]) -> Mapping[str, Any]: ...


class NotAMongos(Exception):
    """Printed as one line by the CLI (exit 2)."""


NOT_A_MONGOS = (
    "timeline shard: MONGODB_URL is not a mongos (hello did not answer msg: 'isdbgrid'); "
    "sharding needs a sharded cluster's router"
)


async def is_mongos(commands: Commands) -> bool:
    hello = await commands.command("admin", {"hello": 1})
    return hello.get("msg") == "isdbgrid"


def _key_text(key: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in key.items()) + "}"


async def _sharded_key(commands: Commands, ns: str) -> dict[str, Any] | None:
    """The shard key `ns` is sharded on now (config.collections), or None."""
    reply = await commands.command("config", {"find": "collections", "filter": {"_id": ns}})
    for doc in reply.get("cursor", {}).get("firstBatch", []):
        if not doc.get("dropped", False) and doc.get("key"):
            return dict(doc["key"])
    return None


async def shard_database(commands: Commands, db: str, out: Callable[[str], None]) -> int:
    """Apply the plan to database `db` through a mongos. Returns 0, or 1 if a collection is already
    sharded on another key than planned (left as is: changing it is a `reshardCollection`)."""
    if not await is_mongos(commands):
        raise NotAMongos(NOT_A_MONGOS)
    await commands.command("admin", {"enableSharding": db})
    out(f"enableSharding {db}: ok")
    mismatched = 0
    planned = plan_by_collection()
    for name, indexes in model_indexes().items():
        row = planned.get(name)
        if row is None:
            out(f"{name}: no shard plan (a row in CORE_PLAN or its strategy's); left unsharded")
            continue
        wanted = list(indexes)
        if row.key is not None:
            # A hashed key needs a hashed index, which no model index provides.
            wanted.append(IndexModel(list(row.key)))
        if wanted:
            await commands.command(
                db, {"createIndexes": name, "indexes": [i.document for i in wanted]}
            )
        out(f"{name}: {len(wanted)} indexes ready")
        if row.key is None:
            out(f"{name}: stays unsharded ({row.why})")
            continue
        ns = f"{db}.{name}"
        key = row.key_document()
        current = await _sharded_key(commands, ns)
        if current is None:
            await commands.command("admin", {"shardCollection": ns, "key": key})
            out(f"{name}: sharded on {_key_text(key)}")
        elif current == key:
            out(f"{name}: already sharded on {_key_text(key)}")
        else:
            mismatched += 1
            out(
                f"{name}: already sharded on {_key_text(current)}, not the planned "
                f"{_key_text(key)}; left as is (reshardCollection changes it)"
            )
    return 1 if mismatched else 0


class ClientCommands:
    """`Commands` over a PyMongo client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def command(self, db: str, cmd: Mapping[str, Any]) -> Mapping[str, Any]:
        reply: Mapping[str, Any] = await self.client[db].command(dict(cmd))
        return reply


async def shard(url: str, db: str, out: Callable[[str], None]) -> int:
    from app.storage.db import make_client

    client = make_client(url)
    try:
        return await shard_database(ClientCommands(client), db, out)
    finally:
        await client.close()
