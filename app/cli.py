"""The `timeline` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import FrameType

from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from app.context import AppContext, build_context
from app.db import SERVER_SELECTION_TIMEOUT_MS, connect
from app.embedded import EmbeddedServer, EmbeddedServerError
from app.settings import STRATEGY_NAMES, ConfigError, Settings, load_settings
from fanout.worker import LEASE_S as WORKER_LEASE_S

log = logging.getLogger("timeline")

# The embedded database fsyncs its log on every commit. Without it, SecantusDB acknowledges a
# commit before its log reaches the disk, and a SIGKILL right after loses the last acknowledged
# transactions (measured: 9 of 200; docs/security.md). The cost is about half the commit rate.
EMBEDDED_SYNC_ON_COMMIT = True
# How long the API keeps an idle keep-alive connection open. It must outlast every client's own
# idle expiry: uvicorn's default (5 s) equals httpx's `keepalive_expiry` (5 s), so a client could
# reuse a connection in the very moment the server closed it, and the request died with a
# ReadError (a connection reset; seen once in a 50-client load run). 75 s also outlasts the
# 60 s idle timeout of common load balancers (nginx, AWS ALB), which must close first.
KEEP_ALIVE_S = 75
# The project's Beanie migrations (a directory beside the packages, see docs/operations.md).
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class StartupError(Exception):
    """Printed as one line, then exit 2."""


def _check_reachable(url: str) -> None:
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


@contextmanager
def database_url(settings: Settings) -> Iterator[tuple[Settings, bool]]:
    """Settings with a reachable MONGODB_URL: the configured one, or an embedded server's."""
    if settings.mongodb_url is not None:
        _check_reachable(settings.mongodb_url)
        yield settings, False
        return
    server = EmbeddedServer(
        settings.timeline_data_dir / "db", sync_on_commit=EMBEDDED_SYNC_ON_COMMIT
    )
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise StartupError(str(exc)) from None
    log.info("embedded database at %s (data in %s)", server.url, server.data_dir)
    try:
        yield settings.model_copy(update={"mongodb_url": server.url}), True
    finally:
        server.stop()


@asynccontextmanager
async def open_context(settings: Settings, embedded: bool) -> AsyncIterator[AppContext]:
    assert settings.mongodb_url is not None
    database = await connect(settings.mongodb_url, settings.mongodb_db, embedded=embedded)
    try:
        yield await build_context(settings, database)
    finally:
        await database.close()


async def ensure_strategy_ready(strategy: str, settings: Settings) -> None:
    """Refuse to serve a strategy whose derived data this database never had built, or whose
    data was shaped by other values of the settings that shape it (e.g. TIMELINE_MAX)."""
    from app import maintenance, recorded_settings

    try:
        warning = await maintenance.ensure_ready(strategy)
        await recorded_settings.ensure_matching(settings)
    except (maintenance.StrategyNotBuilt, recorded_settings.SettingsMismatch) as exc:
        raise StartupError(str(exc)) from None
    if warning:
        log.warning("%s", warning)


def _guard(resolved: Settings, embedded: bool) -> None:
    async def run() -> None:
        async with open_context(resolved, embedded) as ctx:
            await ensure_strategy_ready(ctx.strategy.name, ctx.settings)

    asyncio.run(run())


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.api import create_app

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the
    # signal again. With the default handler the process would die right there, before
    # `database_url` stops the embedded server (an orphan holding the data directory); this
    # handler turns that second SIGTERM into a clean exit that runs every `finally`.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    with database_url(settings) as (resolved, embedded):
        _guard(resolved, embedded)
        app = create_app(resolved, embedded=embedded, run_worker=not args.no_worker)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    return 0


def _exit_after_shutdown(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from fanout.worker import WorkerPool

    async def run(resolved: Settings, embedded: bool) -> None:
        async with open_context(resolved, embedded) as ctx:
            await ensure_strategy_ready(ctx.strategy.name, ctx.settings)
            worker = WorkerPool(
                ctx, name=args.name, lease_s=args.lease_seconds, concurrency=args.concurrency
            )
            if args.metrics_port is not None:
                from prometheus_client import start_http_server

                # The worker's own counters (events applied/failed/dead, batch sizes); the
                # API's /metrics only has those of its in-process worker.
                start_http_server(args.metrics_port, addr=args.metrics_host)
                log.info("metrics on http://%s:%d/", args.metrics_host, args.metrics_port)
            worker.install_signal_handlers()
            await worker.run()

    with database_url(settings) as (resolved, embedded):
        asyncio.run(run(resolved, embedded))
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading

    server = EmbeddedServer(
        settings.timeline_data_dir / "db", port=args.port, sync_on_commit=EMBEDDED_SYNC_ON_COMMIT
    )
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise StartupError(str(exc)) from None
    print(f"MONGODB_URL={server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and server.process and server.process.poll() is None:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress, TaskID

    from app import maintenance, recorded_settings
    from app.strategies import build_strategy
    from fanout import switch

    async def run(resolved: Settings, embedded: bool) -> int:
        async with open_context(resolved, embedded) as ctx:
            if args.user and not await maintenance.user_ids(args.user):
                raise StartupError(f"--user: no user {args.user!r}")
            # A changed setting that shapes derived data (TIMELINE_MAX): every strategy's data
            # is rebuilt for every user under the new value, which is then recorded.
            changed_settings = await recorded_settings.mismatches(ctx.settings)
            strategies = [ctx.strategy]
            if changed_settings:
                var = next(iter(changed_settings))
                if args.user:
                    raise StartupError(
                        f"--user: {var} differs from the value the data was built with "
                        f"({changed_settings[var][0]}); rebuild every user to change it"
                    )
                config = await maintenance.service_config()
                assert config is not None  # mismatches() found a record in it
                names = recorded_settings.derived_strategies(config)
                strategies = [build_strategy(n, ctx.settings.timeline_max) for n in names]
            users = await maintenance.user_ids(args.user)
            for strategy in strategies:
                await strategy.ensure_indexes()
                with Progress() as progress:
                    task = progress.add_task(f"rebuilding ({strategy.name})", total=None)

                    def step(done: int, total: int, task: TaskID = task) -> None:
                        progress.update(task, completed=done, total=total)

                    # Under author leases: safe beside running workers.
                    changed = await switch.rebuild_leased(strategy, users, step)
                print(f"rebuilt {strategy.name}: {changed} documents changed")
            if changed_settings:
                await recorded_settings.record(ctx.settings)
                for var, (old, new) in changed_settings.items():
                    print(f"recorded {var}={new} (was {old}): start the API and workers with it")
            return 0

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from app import maintenance

    async def run(resolved: Settings, embedded: bool) -> int:
        async with open_context(resolved, embedded) as ctx:
            report = await maintenance.check(ctx, args.sample)
        for d in report.drifted:
            print(
                f"drift for {d.handle}: {len(d.missing)} missing {d.missing[:5]}, "
                f"{len(d.extra)} extra {d.extra[:5]}"
            )
        print(
            f"checked {report.checked} timelines ({settings.timeline_strategy}): "
            f"{len(report.drifted)} drifted"
        )
        return 0 if report.ok else 1

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


def cmd_switch_strategy(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from fanout import switch

    async def run(resolved: Settings, embedded: bool) -> int:
        async with open_context(resolved, embedded) as ctx:
            try:
                if args.retire:
                    await switch.retire(args.retire)
                    print(f"{args.retire} is no longer maintained")
                    return 0
                with Progress() as progress:
                    task = progress.add_task(f"building {args.to}", total=None)

                    def step(done: int, total: int) -> None:
                        progress.update(task, completed=done, total=total)

                    changed = await switch.switch_to(ctx, args.to, step)
            except switch.SwitchError as exc:
                raise StartupError(str(exc)) from None
        print(f"{args.to} is built ({changed} documents written) and active.")
        print(f"Restart the API and the workers with TIMELINE_STRATEGY={args.to}, then run")
        print("`timeline switch-strategy --retire OLD` to stop maintaining the old strategy.")
        return 0

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


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

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


def cmd_shard(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the shard plan (app.sharding, docs/scaling.md) through the mongos at MONGODB_URL."""
    from app import sharding

    if settings.mongodb_url is None:
        raise StartupError(f"{sharding.NOT_A_MONGOS} (MONGODB_URL is unset: embedded server)")
    _check_reachable(settings.mongodb_url)
    try:
        return asyncio.run(sharding.shard(settings.mongodb_url, settings.mongodb_db, print))
    except sharding.NotAMongos as exc:
        raise StartupError(str(exc)) from None


def _object_ids(values: list[str]) -> list[ObjectId]:
    bad = [v for v in values if not ObjectId.is_valid(v)]
    if bad:
        raise StartupError(f"not an event id: {bad[0]!r}")
    return [ObjectId(v) for v in values]


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    from fanout import deadletter

    if args.events_command == "retry":
        if bool(args.all) == bool(args.ids):
            raise StartupError("events retry: give event ids or --all (not both)")
        ids = None if args.all else _object_ids(args.ids)

    async def run(resolved: Settings, embedded: bool) -> int:
        async with open_context(resolved, embedded):
            if args.events_command == "retry":
                n = await deadletter.retry(ids)
                print(f"re-queued {n} dead event(s)")
                return 0 if ids is None or n == len(ids) else 1
            state = "dead" if args.dead else args.state
            shown = await deadletter.list_events(state)
            for e in shown:
                print(
                    f"{e['_id']} {e['kind']} author={e['author_id']} attempts={e['attempts']} "
                    f"created={e['created_at']:%Y-%m-%dT%H:%M:%SZ} error={e.get('last_error')}"
                )
            total = await deadletter.count(state)
            print(
                f"{total} {state} event(s)"
                + (f", first {len(shown)} shown" if total > len(shown) else "")
            )
            return 0

    with database_url(settings) as (resolved, embedded):
        return asyncio.run(run(resolved, embedded))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timeline", description="MongoDB social-timeline service")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="the API (and, unless --no-worker, the fanout worker)")
    serve.add_argument("--host", default=None, help="listen address (default: $HOST)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default: $PORT)")
    serve.add_argument("--no-worker", action="store_true", help="do not run the fanout worker")
    worker = sub.add_parser("worker", help="the fanout worker alone (run several if you like)")
    worker.add_argument(
        "--lease-seconds",
        type=_positive_seconds,
        default=WORKER_LEASE_S,
        help=f"how long a crashed worker's events wait before another takes them "
        f"(default {WORKER_LEASE_S:g})",
    )
    worker.add_argument("--name", default=None, help="worker name in leases (default host:pid)")
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="events applied at the same time by this process, each by its own loop with its "
        "own leases (named NAME, NAME#2, ...); default 1",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this worker's Prometheus metrics on this port (default: not served)",
    )
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (127.0.0.1)"
    )
    db = sub.add_parser("db", help="the embedded database alone, printing its MONGODB_URL")
    db.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    rebuild = sub.add_parser("rebuild", help="recompute derived timeline data from the truth")
    rebuild.add_argument("--user", default=None, help="only this handle")
    check = sub.add_parser("check", help="compare materialized timelines with the truth")
    check.add_argument("--sample", type=int, default=None, help="check N random users")
    events = sub.add_parser("events", help="inspect the outbox; re-queue dead events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    listing = events_sub.add_parser("list", help="list events of one state (oldest first)")
    listing.add_argument("--dead", action="store_true", help="dead events (same as --state dead)")
    listing.add_argument(
        "--state", default="pending", choices=["staged", "pending", "done", "dead"]
    )
    retry = events_sub.add_parser("retry", help="re-queue dead events with a fresh attempt budget")
    retry.add_argument("ids", nargs="*", help="event ids (from `events list --dead`)")
    retry.add_argument("--all", action="store_true", help="every dead event")
    switch = sub.add_parser(
        "switch-strategy",
        help="build another strategy's derived data on a live database and make it active",
    )
    which = switch.add_mutually_exclusive_group(required=True)
    which.add_argument("--to", choices=STRATEGY_NAMES, help="the strategy to switch to")
    which.add_argument(
        "--retire", choices=STRATEGY_NAMES, help="stop maintaining a former strategy's data"
    )
    migrate = sub.add_parser("migrate", help="run the Beanie migrations in migrations/")
    migrate.add_argument("--backward", action="store_true", help="roll back instead")
    migrate.add_argument("--distance", type=int, default=0, help="how many (default: all)")
    migrate.add_argument(
        "--path", default=str(MIGRATIONS_DIR), help=f"migrations directory ({MIGRATIONS_DIR})"
    )
    sub.add_parser(
        "shard", help="through a mongos (MONGODB_URL): create the indexes, shard each collection"
    )
    return p


COMMANDS = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "db": cmd_db,
    "rebuild": cmd_rebuild,
    "check": cmd_check,
    "events": cmd_events,
    "switch-strategy": cmd_switch_strategy,
    "migrate": cmd_migrate,
    "shard": cmd_shard,
}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        code = COMMANDS[args.command](settings, args)
    except (ConfigError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
