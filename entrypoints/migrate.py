"""`timeline migrate` (Beanie's migrations) and `timeline shard` (the shard plan)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from app.settings import Settings
from entrypoints.database import StartupError, check_reachable, database_url, open_context

# The project's Beanie migrations (a directory beside the packages, see docs/operations.md).
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Beanie's migration runner (what `beanie migrate -uri URL -db DB -p migrations` does) on
    the configured database, without transactions where the server has none."""
    from beanie.migrations.database import DBHandler
    from beanie.migrations.models import RunningDirections, RunningMode
    from beanie.migrations.runner import MigrationNode

    path = Path(args.path)
    if not path.is_dir():
        raise StartupError(f"--path: no migrations directory {path}")

    async def run(resolved: Settings, embedded: bool) -> int:
        assert resolved.mongodb_url is not None
        async with open_context(resolved, embedded) as ctx:
            use_transaction = ctx.database.supports_transactions
        DBHandler.set_db(resolved.mongodb_url, resolved.mongodb_db)  # type: ignore[no-untyped-call]
        try:
            root = await MigrationNode.build(path)
            direction = RunningDirections.BACKWARD if args.backward else RunningDirections.FORWARD
            await root.run(
                mode=RunningMode(direction=direction, distance=args.distance),
                allow_index_dropping=False,
                use_transaction=use_transaction,
            )
        finally:
            client = DBHandler.get_cli()  # type: ignore[no-untyped-call]
            if client is not None:
                await client.close()
        print(f"migrations {'rolled back' if args.backward else 'applied'} from {path}")
        return 0

    # Beanie's runner opens its own client on the URL, so this one needs the URL, not a context.
    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


def cmd_shard(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the shard plan (app.storage.sharding, docs/scaling.md) through the mongos at
    MONGODB_URL."""
    from app.storage import sharding

    if settings.mongodb_url is None:
        raise StartupError(f"{sharding.NOT_A_MONGOS} (MONGODB_URL is unset: embedded server)")
    check_reachable(settings.mongodb_url)
    try:
        return asyncio.run(sharding.shard(settings.mongodb_url, settings.mongodb_db, print))
    except sharding.NotAMongos as exc:
        raise StartupError(str(exc)) from None
