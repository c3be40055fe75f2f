"""Opening the database for a command: the configured MONGODB_URL, or an embedded server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from app.context import AppContext, build_context
from app.settings import Settings
from app.storage.db import SERVER_SELECTION_TIMEOUT_MS, connect
from app.storage.embedded import EmbeddedServer, EmbeddedServerError
from entrypoints.supervise import EmbeddedSupervisor

log = logging.getLogger("timeline")

T = TypeVar("T")

# The embedded database fsyncs its log on every commit. Without it, SecantusDB acknowledges a
# commit before its log reaches the disk, and a SIGKILL right after loses the last acknowledged
# transactions (measured: 9 of 200; docs/security.md). The cost is about half the commit rate.
EMBEDDED_SYNC_ON_COMMIT = True


class StartupError(Exception):
    """Printed as one line, then exit 2."""


def check_reachable(url: str) -> None:
    try:
        client: MongoClient[dict[str, object]] = MongoClient(
            url, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS
        )
        with client:
            client.admin.command("ping")
    except PyMongoError as exc:
        first = str(exc).split(",")[0].split("\n")[0]
        raise StartupError(f"MONGODB_URL: cannot reach the database ({first})") from None
    except Exception as exc:
        raise StartupError(f"MONGODB_URL: {exc}") from None


def start_embedded(settings: Settings, port: int | None = None) -> EmbeddedServer:
    server = EmbeddedServer(
        settings.timeline_data_dir / "db",
        port=port,
        sync_on_commit=EMBEDDED_SYNC_ON_COMMIT,
        cache_mb=settings.embedded_db_cache_mb,
    )
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise StartupError(str(exc)) from None
    return server


@contextmanager
def database_url(settings: Settings) -> Iterator[tuple[Settings, bool]]:
    """Settings with a reachable MONGODB_URL: the configured one, or an embedded server's."""
    if settings.mongodb_url is not None:
        check_reachable(settings.mongodb_url)
        yield settings, False
        return
    server = start_embedded(settings)
    log.info("embedded database at %s (data in %s)", server.url, server.data_dir)
    # Restarted in place if it dies; the process exits non-zero if it keeps dying.
    supervisor = EmbeddedSupervisor(server).start()
    try:
        yield settings.model_copy(update={"mongodb_url": server.url}), True
    finally:
        supervisor.stop()
        server.stop()


@asynccontextmanager
async def open_context(settings: Settings, embedded: bool) -> AsyncIterator[AppContext]:
    assert settings.mongodb_url is not None
    database = await connect(settings.mongodb_url, settings.mongodb_db, embedded=embedded)
    try:
        yield await build_context(settings, database)
    finally:
        await database.close()


def with_context(settings: Settings, fn: Callable[[AppContext], Awaitable[T]]) -> T:
    """Run `fn` on a context bound to the configured (or an embedded) database, then close it
    and stop the embedded server: what every command that works on the data does."""

    async def run(resolved: Settings, embedded: bool) -> T:
        async with open_context(resolved, embedded) as ctx:
            return await fn(ctx)

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


async def ensure_strategy_ready(ctx: AppContext) -> None:
    """Refuse to serve a strategy whose derived data this database never had built, or whose
    data was shaped by other values of the settings that shape it (e.g. TIMELINE_MAX)."""
    from app import maintenance
    from app.storage import recorded_settings

    try:
        warning = await maintenance.ensure_ready(ctx.store, ctx.strategy.name)
        await recorded_settings.ensure_matching(ctx.store, ctx.settings)
    except (maintenance.StrategyNotBuilt, recorded_settings.SettingsMismatch) as exc:
        raise StartupError(str(exc)) from None
    if warning:
        log.warning("%s", warning)
