"""The `timeline` command: parses the arguments and runs one command module's function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from app.settings import ConfigError, Settings, load_settings
from app.storage import pymongo_compat
from app.strategies import STRATEGY_NAMES
from entrypoints.database import StartupError
from entrypoints.maintenance import cmd_check, cmd_events, cmd_rebuild, cmd_switch_strategy
from entrypoints.migrate import MIGRATIONS_DIR, cmd_migrate, cmd_shard
from entrypoints.serve import cmd_db, cmd_serve
from entrypoints.worker import cmd_worker
from fanout.worker import LEASE_S as WORKER_LEASE_S


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


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_events(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timeline", description="MongoDB social-timeline service")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="the API (and, unless --no-worker, the fanout worker)")
    serve.add_argument("--host", default=None, help="listen address (default: $HOST)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default: $PORT)")
    serve.add_argument("--no-worker", action="store_true", help="do not run the fanout worker")
    _add_worker(sub)
    db = sub.add_parser("db", help="the embedded database alone, printing its MONGODB_URL")
    db.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    rebuild = sub.add_parser("rebuild", help="recompute derived timeline data from the truth")
    rebuild.add_argument("--user", default=None, help="only this handle")
    check = sub.add_parser("check", help="compare materialized timelines with the truth")
    check.add_argument("--sample", type=int, default=None, help="check N random users")
    _add_events(sub)
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


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
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
    # PyMongo's async condition waits misbehave on Python 3.11 during outages (500s and hangs);
    # every process that talks to the database applies the fix first (app.storage.pymongo_compat).
    pymongo_compat.apply()
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
