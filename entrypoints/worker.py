"""`timeline worker` (and `python -m fanout`): the fanout worker as its own process."""

from __future__ import annotations

import argparse
import logging

from app.context import AppContext
from app.settings import Settings
from entrypoints.database import ensure_strategy_ready, with_context

log = logging.getLogger("timeline")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from fanout.pool import WorkerPool

    async def run(ctx: AppContext) -> int:
        await ensure_strategy_ready(ctx)
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
        return 0

    return with_context(settings, run)
