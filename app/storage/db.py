"""The storage boundary: connecting, Beanie initialisation, transactions, error conversion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pymongo
from beanie import init_beanie
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from app.domain.errors import DomainError, Unavailable
from app.storage.models import DOCUMENT_MODELS
from app.storage.store import Store

T = TypeVar("T")

# How long the driver looks for a server before an operation fails with 503. Bounded so that a
# request during an outage answers quickly instead of hanging (the driver default is 30 s).
SERVER_SELECTION_TIMEOUT_MS = 3_000
CONNECT_TIMEOUT_MS = 3_000
# Client-side operation timeout: no request waits on the database longer than this.
OPERATION_TIMEOUT_MS = 15_000

Session = AsyncClientSession | None


def make_client(
    url: str,
    *,
    timeout_ms: int | None = OPERATION_TIMEOUT_MS,
    event_listeners: Sequence[monitoring._EventListener] = (),
) -> AsyncMongoClient[Any]:
    """A client with the service's timeouts; `event_listeners` watch only this client's commands
    (a test or a benchmark counting round trips), unlike PyMongo's process-wide `register`."""
    kwargs: dict[str, Any] = {
        "serverSelectionTimeoutMS": SERVER_SELECTION_TIMEOUT_MS,
        "connectTimeoutMS": CONNECT_TIMEOUT_MS,
        "tz_aware": True,
        "event_listeners": list(event_listeners),
    }
    if timeout_ms is not None:
        kwargs["timeoutMS"] = timeout_ms
    return AsyncMongoClient(url, **kwargs)


@dataclass
class Database:
    client: AsyncMongoClient[Any]
    db: AsyncDatabase[Any]
    supports_transactions: bool
    embedded: bool
    # The collections of `db`, bound once here and passed on (app.storage.store).
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store.bind(self.db)

    async def in_transaction(self, fn: Callable[[Session], Awaitable[T]]) -> T:
        """Run `fn` in a transaction (retried by the driver on transient errors) where the server
        supports one, else run it with no session: callers then order their writes so that a crash
        between them cannot lose an event (see app.pipeline.outbox)."""
        if not self.supports_transactions:
            return await fn(None)
        async with self.client.start_session() as session:
            # with_transaction retries transient errors for up to 120 s, unless a pymongo.timeout
            # deadline is active: bound the whole transaction, retries included, so that a
            # request during an outage gets its 503 instead of hanging for two minutes.
            with pymongo.timeout(OPERATION_TIMEOUT_MS / 1000):
                return await session.with_transaction(fn)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()


async def connect(url: str, db_name: str, *, embedded: bool) -> Database:
    """Connect, check the server answers, and bind the Beanie documents to `db_name`."""
    client = make_client(url)
    try:
        hello = await client.admin.command("hello")
    except PyMongoError:
        await client.close()
        raise
    # Multi-document transactions need a replica set or a sharded cluster (mongos).
    supports_txn = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
    db = client[db_name]
    await init_beanie(database=db, document_models=DOCUMENT_MODELS)
    return Database(client=client, db=db, supports_transactions=supports_txn, embedded=embedded)


def domain_error_from_pymongo(exc: PyMongoError) -> DomainError | None:
    """Database outages become 503; anything else is a bug and stays a 500."""
    outage = (
        ConnectionFailure,
        AutoReconnect,
        ServerSelectionTimeoutError,
        NetworkTimeout,
        ExecutionTimeout,
        WTimeoutError,
    )
    if isinstance(exc, outage) or getattr(exc, "timeout", False):
        return Unavailable("the database is unavailable; retry later")
    return None
